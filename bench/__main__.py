"""Run benchmark suites side by side with the peers, print the table, write JSON to bench/results/.

    python -m bench                # every suite
    python -m bench lrp --quick    # one suite, fewer repeats
    python -m bench lrp paths deconv --device cuda   # on a GPU (results: bench/results/SUITE-cuda.json)
"""
from __future__ import annotations

import argparse
import importlib

from .common import machine, report, save, table

SUITES = {"lrp": "bench.lrp_speed", "deconv": "bench.deconv_speed", "paths": "bench.paths_speed",
          "views": "bench.views_speed", "app": "bench.app_speed", "users": "bench.users_speed",
          "binder": "bench.binder_speed", "atlas": "bench.atlas_speed"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (lrp: batch 1 and 64 there)")
    parser.add_argument("--report", action="store_true", help="only rewrite docs/benchmarks.md from bench/results")
    args = parser.parse_args()
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    if args.report:
        print("wrote", report())
        return
    print(machine())
    for name in args.suites or list(SUITES):
        rows = importlib.import_module(SUITES[name]).run(repeat=3 if args.quick else 7, threads=args.threads,
                                                         device=args.device)
        print(table(rows))
        print("wrote", save(rows, name if args.device == "cpu" else f"{name}-{args.device}"))
    print("wrote", report())


if __name__ == "__main__":
    main()
