"""The ``lrp-widgets`` command line.

    lrp-widgets explain IMAGE [--weights imagenet|random|auto|PATH] [--model vgg16] [--target CLASS] [--out DIR]
                        [--preset paper] [--rule NAME=RULE[:ARG] …] [--graph-layers NAME,…] …
    lrp-widgets explain IMAGE --model my_package.models:build [--weights own|PATH] [--mean M,M,M] [--std S,S,S]
                        [--size N] [--categories FILE] …
    lrp-widgets deconv IMAGE --layer NAME --channel C [--model …] [--weights …] [--mode map|max] --out FILE.png
                       [--npy FILE.npy]
    lrp-widgets atlas FOLDER [--model …] [--weights …] [--preset P] [--layers L1,L2,…] [--top K] --out DIR
                      [--target label|predicted] [--batch-size N] [--workers N] [--resume] [--ray ADDRESS]
    lrp-widgets app [--port N] [--weights …] [--atlas DIR] [--no-browser] [--max-kernels N] [--memory-budget SIZE] [--device cpu|cuda]

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

from .errors import LRPWidgetsError, ModelError, TargetError

EXIT_BAD_INPUT = 2


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, a torchvision name or your own network, with its weights and input."""
    from .engine.models import MODELS

    parser.add_argument("--model", default="vgg16", metavar="NAME|MODULE:ATTR",
                        help=f"a torchvision model ({', '.join(MODELS)}) or your own network: module.path:attribute "
                             "or file.py:attribute, an nn.Module or a function returning one")
    parser.add_argument("--weights", default=None,
                        help="imagenet (the default), random, auto (imagenet if available, else random) or a "
                             "state-dict file; your network: own (as it has them, the default) or a state-dict file")
    parser.add_argument("--mean", default=None, metavar="M,M,M",
                        help="your network's normalisation, one value per input channel (default ImageNet's)")
    parser.add_argument("--std", default=None, metavar="S,S,S", help="as --mean")
    parser.add_argument("--size", type=int, default=None,
                        help="your network's input side: resize to round(N·256/224), centre-crop N (default 224)")
    parser.add_argument("--categories", default=None, metavar="FILE",
                        help="your network's class names, one a line")


def _explain_parser(commands) -> None:
    from .engine.composites import PRESETS
    from .engine.rules import RULES

    explain = commands.add_parser("explain", help="explain one image: relevance.npy, heatmap.png, summary.json")
    explain.add_argument("image", help="any image file Pillow can read, or castle, barn, zebra")
    _model_arguments(explain)
    explain.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1)")
    explain.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="rule preset")
    explain.add_argument("--rule", action="append", default=[], metavar="NAME=RULE[:ARG]",
                         help="one layer's rule, e.g. layer4.2.conv3=gamma:0.25 or features.0=zbox; rules: "
                              + ", ".join(RULES) + " (repeatable)")
    explain.add_argument("--graph-layers", default=None, metavar="NAME,…",
                         help="the neuron graph's layers, module names (default: the model family's)")
    explain.add_argument("--maxpool", default="winner", choices=("winner", "average"))
    explain.add_argument("--k", type=int, default=5, help="number of best paths")
    explain.add_argument("--top-n", type=int, default=8, help="nodes kept per layer in the graph")
    explain.add_argument("--layer", default=None,
                         help="layer of the threshold sweep (default: the graph's last layer with feature maps)")
    explain.add_argument("--out", default="lrp-out", help="output folder")
    explain.set_defaults(run=run_explain)


def _deconv_parser(commands) -> None:
    from .engine.deconv import MODES

    deconv = commands.add_parser("deconv", help="deconvnet reconstruction of one channel: a PNG (and .npy)")
    deconv.add_argument("image", help="any image file Pillow can read, or castle, barn, zebra")
    deconv.add_argument("--layer", required=True, help="layer name, e.g. features.28")
    deconv.add_argument("--channel", type=int, required=True, help="channel (feature map) of that layer")
    _model_arguments(deconv)
    deconv.add_argument("--mode", default="map", choices=MODES,
                        help="start from the whole feature map or only its maximum")
    deconv.add_argument("--out", required=True, help="PNG file: the image and the reconstruction")
    deconv.add_argument("--npy", default=None,
                        help="also save the reconstruction (the input's shape, e.g. 3×224×224) here")
    deconv.set_defaults(run=run_deconv)


def _atlas_parser(commands) -> None:
    from .engine.composites import PRESETS

    atlas = commands.add_parser("atlas", help="explain every image of a folder: each neuron's reference images, each "
                                              "class's neurons and graph (Parquet files in --out)")
    atlas.add_argument("folder", help="one sub-folder per class, named by class index, category name or WordNet id")
    _model_arguments(atlas)
    atlas.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="rule preset")
    atlas.add_argument("--layers", default=None, metavar="NAME,…",
                       help="module names (default: the neuron graph's layers but the output)")
    atlas.add_argument("--top", type=int, default=40, metavar="K", help="reference images per channel and statistic")
    atlas.add_argument("--target", default="label", choices=("label", "predicted"),
                       help="explain each image's folder class (as zennit-crp does) or its predicted class")
    atlas.add_argument("--top-n", type=int, default=8, help="nodes kept per layer in each image's graph")
    atlas.add_argument("--batch-size", type=int, default=8)
    atlas.add_argument("--workers", type=int, default=2, help="processes decoding images")
    atlas.add_argument("--shard-size", type=int, default=128, help="images per shard: the unit --resume keeps")
    atlas.add_argument("--resume", action="store_true", help="keep the shards a stopped run in --out finished")
    atlas.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="explain the shards on a Ray cluster (host:port, or auto); needs lrp-widgets[ray]")
    atlas.add_argument("--out", required=True, help="output folder")
    atlas.set_defaults(run=run_atlas)


def run_atlas(args: argparse.Namespace) -> None:
    from .atlas import build_atlas

    if args.batch_size < 1 or args.workers < 0:
        raise TargetError("--batch-size must be at least 1 and --workers at least 0")
    layers = [name for name in args.layers.split(",") if name] if args.layers else None
    atlas = build_atlas(args.folder, _load(args), args.out, layers, args.top, args.target, args.preset, args.top_n,
                        args.batch_size, args.workers, args.shard_size, args.resume, ray=args.ray)
    print(f"wrote the atlas of {atlas.info['images']} images ({atlas.info['skipped']} skipped, see skipped.csv) "
          f"at {', '.join(atlas.layers)} to {args.out}")


def _app_parser(commands) -> None:
    from .engine.models import MODELS

    app = commands.add_parser("app", help="serve the Explorer as a Voila dashboard")
    app.add_argument("--port", type=int, default=None)
    app.add_argument("--model", default=None,
                     help=f"the torchvision model it opens with (default vgg16, or the atlas's): {', '.join(MODELS)}")
    app.add_argument("--weights", default=None, help="imagenet, random, auto (imagenet if available, else random; "
                                                     "the default, or the atlas's) or a state-dict file")
    app.add_argument("--atlas", default=None, metavar="DIR",
                     help="an atlas (lrp-widgets atlas): the selected neuron's reference images; its model and weights")
    app.add_argument("--no-browser", action="store_true", help="do not open a browser")
    app.add_argument("--max-kernels", type=int, default=None,
                     help="most visitors (kernels) at once; 0 = no limit; default: as many as the memory holds")
    app.add_argument("--memory-budget", type=_memory_size, default=None, metavar="SIZE",
                     help="memory one visitor's kernel takes, for the default of --max-kernels (e.g. 800M)")
    app.add_argument("--device", default="cpu", help="cpu or cuda")
    app.set_defaults(run=serve_app)


def _memory_size(text: str) -> int:
    from .deploy import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def serve_app(args: argparse.Namespace) -> None:
    """Replaces this process with Voila."""
    from .app import serve
    from .engine.models import MODELS

    if args.atlas:  # its model and weights, checked before Voila starts
        from .atlas import Atlas
        from .views.explorer import atlas_model

        args.model, args.weights = atlas_model(Atlas.open(args.atlas).info, args.atlas, args.model, args.weights)
    if args.model is not None and args.model not in MODELS:
        raise ModelError(f"the app opens with a torchvision model such as vgg16 (see --help), not '{args.model}': "
                         "explain your own network with explain or deconv, or Explorer(model=...) in a notebook")
    serve(args.port, args.weights, args.model, browser=not args.no_browser, max_kernels=args.max_kernels,
          device=args.device, memory_budget=args.memory_budget, atlas=args.atlas)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrp-widgets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _explain_parser(commands)
    _deconv_parser(commands)
    _atlas_parser(commands)
    _app_parser(commands)
    return parser


@contextmanager
def staged(*paths: Path) -> Iterator[list[Path]]:
    """Scratch paths (in hidden folders beside ``paths``) that replace ``paths`` only if the block succeeds; a
    scratch folder's files replace those of the same names in its path's folder, the other files stay."""
    folders: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.append(Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)))
        scratch = [folder / path.name for folder, path in zip(folders, paths)]
        yield scratch
        for made, path in zip(scratch, paths):
            if made.is_dir():
                path.mkdir(exist_ok=True)
                for item in made.iterdir():
                    item.replace(path / item.name)
            else:
                made.replace(path)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def run_explain(args: argparse.Namespace) -> None:
    import numpy as np

    from .analysis.bundle import Bundle
    from .analysis.figures import model_label, save_heatmap_figure, save_overlay, save_threshold_figure
    from .analysis.render import activation_overlay, relevance_overlay
    from .engine.predict import explain_image, summary

    if args.k < 1 or args.top_n < 1:
        raise TargetError("--k and --top-n must be at least 1")
    overrides = dict(_rule(text) for text in args.rule)
    image = read_image(args.image)
    model = _load(args)
    result = explain_image(model, image, target=args.target, preset=args.preset, maxpool=args.maxpool,
                           overrides=overrides)
    bundle = Bundle(model, image, result, args.top_n, args.graph_layers.split(",") if args.graph_layers else None)
    layer = result.network.resolve(args.layer) if args.layer else bundle.conv_layers[-1]
    label = model_label(model)
    with staged(Path(args.out)) as (scratch,):
        scratch.mkdir()
        paths = bundle.paths(args.k)
        np.save(scratch / "relevance.npy", bundle.input_relevance.cpu().numpy().astype(np.float32))
        save_heatmap_figure(bundle.picture, result, model, scratch / "heatmap.png")
        (scratch / "summary.json").write_text(json.dumps(summary(result, model), indent=2))
        (scratch / "graph.json").write_text(json.dumps(bundle.graph().to_cytoscape()))
        (scratch / "paths.json").write_text(json.dumps(
            {"k": args.k, "n": bundle.path_count(),
             "paths": [{"nodes": p.as_pairs(), "score": p.score} for p in paths]}, indent=1))
        save_overlay(bundle.picture, relevance_overlay(bundle.picture, bundle.union_relevance(args.k)),
                     f"K-{args.k} path relevance ({label})", scratch / "path_relevance.png")
        save_overlay(bundle.picture, activation_overlay(bundle.picture, bundle.path_activation(args.k)),
                     f"K-{args.k} path activation ({label})", scratch / "path_activation.png")
        (scratch / "threshold.json").write_text(json.dumps(bundle.sweep(layer).to_json(), indent=1))
        save_threshold_figure(bundle.sweep(layer), scratch / "threshold.png")
    print(f"wrote relevance.npy, heatmap.png, summary.json, graph.json, paths.json, path_relevance.png, "
          f"path_activation.png, threshold.json, threshold.png to {args.out}")
    _warn_untrained(model)


def _rule(text: str):
    """``NAME=RULE[:ARG]`` → (name, rule)."""
    from .engine.composites import parse_rule

    name, equals, rule = text.partition("=")
    if not equals or not name or not rule:
        raise TargetError(f"--rule '{text}': write NAME=RULE, e.g. layer4.2.conv3=gamma:0.25")
    return name, parse_rule(rule)


def run_deconv(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from .analysis.bundle import Bundle
    from .analysis.render import deconvolution_rgb
    from .engine.deconv import deconvolve, record

    image = read_image(args.image)
    model = _load(args)
    bundle = Bundle(model, image, record(model.module, model.preprocess(image)[None]))
    reconstruction = deconvolve(bundle.explanation, args.layer, [args.channel], mode=args.mode)[0].cpu().numpy()
    pair = np.concatenate([bundle.picture, deconvolution_rgb(reconstruction)], axis=1)  # zero is mid-grey
    paths = [Path(args.out)] + ([Path(args.npy)] if args.npy else [])
    with staged(*paths) as scratch:
        Image.fromarray(pair).save(scratch[0], format="PNG")
        if args.npy:
            with scratch[1].open("wb") as file:
                np.save(file, reconstruction.astype(np.float32))
    print("wrote " + " and ".join(map(str, paths)))
    _warn_untrained(model)


def read_image(argument: str):
    """An image file, or one of the named examples when no such file exists."""
    from .engine.images import open_image
    from .examples import EXAMPLES, load_example

    return load_example(argument) if argument in EXAMPLES and not Path(argument).exists() else open_image(argument)


def _load(args: argparse.Namespace):
    """The torchvision model or your network that ``--model`` names, with ``--weights`` and the options of yours."""
    from .engine.models import MODELS, UntrainedWeightsWarning, load_model, load_user_model

    if args.model not in MODELS:
        return load_user_model(args.model, args.weights, _numbers(args.mean, "--mean"), _numbers(args.std, "--std"),
                               224 if args.size is None else args.size, _categories(args.categories))
    yours = {"--weights own": args.weights == "own", "--mean": args.mean is not None, "--std": args.std is not None,
             "--size": args.size is not None, "--categories": args.categories is not None}
    given = [option for option, used in yours.items() if used]
    if given:
        raise ModelError(f"{', '.join(given)} go with your own network (--model module.path:attribute), "
                         f"not with {args.model}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return load_model(args.model, args.weights or "imagenet")


def _numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` → (0.5, 0.5, 0.5)."""
    if text is None:
        return None
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise ModelError(f"{option} '{text}': write one number per input channel, e.g. 0.5,0.5,0.5") from None


def _categories(path: str | None) -> list[str]:
    """The class names in a file, one a line (blank lines skipped)."""
    if path is None:
        return []
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"categories file '{path}' cannot be read ({type(error).__name__})") from None


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
