"""Timing, peak memory and the results table shared by every suite."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    suite: str
    case: str
    median_s: float
    runs: int
    peak_mb: float | None = None
    baseline: str | None = None  # the row this one is compared with
    ratio: float | None = None
    target: str = ""
    extra: dict = field(default_factory=dict)


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> float:
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak_rss() -> None:
    """Linux: restart the VmHWM counter of this process."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_extra_mb(fn: Callable[[], object]) -> float:
    """Peak RSS reached while ``fn`` runs, above the RSS just before it (CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    reset_peak_rss()
    before = rss_mb()
    fn()
    return peak_rss_mb() - before


def in_subprocess(module: str, function: str, *args: str) -> dict:
    """Run ``module.function(*args)`` in a fresh interpreter (clean peak memory) and return its JSON."""
    code = f"import json, sys; from {module} import {function} as f; print(json.dumps(f(*sys.argv[1:])))"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def table(rows: list[Row]) -> str:
    lines = ["| suite | case | median | ratio | vs | peak MB | target |", "|---|---|---:|---:|---|---:|---|"]
    for row in rows:
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
        peak = f"{row.peak_mb:.0f}" if row.peak_mb is not None else ""
        lines.append(f"| {row.suite} | {row.case} | {_duration(row.median_s)} | {ratio} | {row.baseline or ''} "
                     f"| {peak} | {row.target} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds == 0:
        return ""
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds * 1000:.1f} ms"


def compare(rows: list[Row], case: str, baseline: str, target: str = "") -> None:
    """Set ``case``'s ratio to its median over ``baseline``'s."""
    by_case = {row.case: row for row in rows}
    row, base = by_case[case], by_case[baseline]
    row.ratio, row.baseline, row.target = row.median_s / base.median_s, baseline, target


def save(rows: list[Row], name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2))
    return path


DOCS = Path(__file__).parents[1] / "docs" / "benchmarks.md"
INTRO = Path(__file__).parent / "intro.md"


def report() -> Path:
    """docs/benchmarks.md: bench/intro.md, then every suite's latest table with the machine it ran on."""
    parts = [INTRO.read_text().rstrip(), ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        rows = [Row(**row) for row in data["rows"]]
        info = data["machine"]
        where = info.get("gpu") or f"{info['cpu']}, {info['threads']} threads"
        parts += [f"## {path.stem}", "", f"`python -m bench {path.stem}` — torch {info['torch']}, {where}", "",
                  table(rows), ""]
    DOCS.write_text("\n".join(parts))
    return DOCS
