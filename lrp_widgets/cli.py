"""The ``lrp-widgets`` command line.

    lrp-widgets explain IMAGE [--weights imagenet|random|PATH] [--model vgg16] [--target CLASS] [--out DIR]

Bad input prints one line on stderr and exits with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import LRPWidgetsError

EXIT_BAD_INPUT = 2


def _explain_parser(commands) -> None:
    from .engine.composites import PRESETS
    from .engine.models import MODELS

    explain = commands.add_parser("explain", help="explain one image: relevance.npy, heatmap.png, summary.json")
    explain.add_argument("image", help="any image file Pillow can read, or castle, barn, zebra")
    explain.add_argument("--model", default="vgg16", choices=MODELS)
    explain.add_argument("--weights", default="imagenet",
                         help="imagenet, random, auto (imagenet if available, else random) or a state-dict file")
    explain.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1)")
    explain.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="rule preset")
    explain.add_argument("--maxpool", default="winner", choices=("winner", "average"))
    explain.add_argument("--out", default="lrp-out", help="output folder")
    explain.set_defaults(run=run_explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrp-widgets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _explain_parser(commands)
    return parser


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A scratch folder whose files move into ``out`` only if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield scratch
        out.mkdir(parents=True, exist_ok=True)
        for item in scratch.iterdir():
            item.replace(out / item.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_explain(args: argparse.Namespace) -> None:
    import numpy as np

    from .analysis.figures import save_heatmap_figure
    from .engine.images import display_image
    from .engine.predict import explain_image, summary

    image = read_image(args.image)
    model = _load(args.model, args.weights)
    result = explain_image(model, image, target=args.target, preset=args.preset, maxpool=args.maxpool)
    with staged_output(Path(args.out)) as scratch:
        np.save(scratch / "relevance.npy", result.relevances["input"][0].cpu().numpy().astype(np.float32))
        save_heatmap_figure(display_image(image), result, model, scratch / "heatmap.png")
        (scratch / "summary.json").write_text(json.dumps(summary(result, model), indent=2))
    print(f"wrote relevance.npy, heatmap.png, summary.json to {args.out}")
    _warn_untrained(model)


def read_image(argument: str):
    """An image file, or one of the named examples when no such file exists."""
    from .engine.images import open_image
    from .examples import EXAMPLES, load_example

    return load_example(argument) if argument in EXAMPLES and not Path(argument).exists() else open_image(argument)


def _load(name: str, weights: str):
    from .engine.models import UntrainedWeightsWarning, load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return load_model(name, weights)


def _warn_untrained(model) -> None:
    from .engine.models import UNTRAINED_MESSAGE

    if not model.pretrained:
        print(f"warning: {UNTRAINED_MESSAGE}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LRPWidgetsError as error:
        print(f"lrp-widgets: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
