"""The dataset atlas: many explanations aggregated — what each neuron responds to over an image folder (its
top-K reference images) and what each class relies on (mean relevance per neuron, class-level neuron graph).

>>> import tempfile, warnings, pathlib
>>> from PIL import Image
>>> from lrp_widgets.engine.models import load_model
>>> folder, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
>>> for name in ("castle", "barn"):
...     (folder / name).mkdir()
...     Image.new("RGB", (64, 64), name == "barn" and "red" or "gray").save(folder / name / "1.png")
>>> with warnings.catch_warnings(record=True):
...     model = load_model("vgg11", "random")
>>> atlas = build_atlas(folder, model, out, layers=["features.18"], k=2, progress=False)
>>> sorted(row["image"] for row in atlas.references("features.18", 0))
['barn/1.png', 'castle/1.png']
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..engine.models import LoadedModel
from .build import Checkpoints, make_plan, run_local
from .statistics import STATISTICS, Partial
from .store import Atlas, Comparison, write

__all__ = ["Atlas", "Comparison", "STATISTICS", "build_atlas"]


def build_atlas(folder: str | Path, model: LoadedModel, out: str | Path, layers: Sequence[str] | None = None,
                k: int = 40, target: str = "label", preset: str = "paper", top_n: int = 8, batch_size: int = 8,
                workers: int = 2, shard_size: int = 128, resume: bool = False, progress: bool = True,
                ray: str | None = None) -> Atlas:
    """Explain every image of ``folder`` (one sub-folder per class) and write the atlas to ``out``.

    ``layers``: module names (default: the neuron graph's layers); ``k``: reference images per channel and
    statistic; ``target``: ``"label"`` (the folder's class, as zennit-crp does) or ``"predicted"``; ``workers``:
    processes decoding images; ``resume``: keep the shards a stopped run finished; ``ray``: the address of a Ray
    cluster (``"auto"``) to explain the shards on (:mod:`~lrp_widgets.atlas.distributed`).
    """
    import torch
    import torchvision
    from tqdm import tqdm

    from importlib.metadata import version

    plan = make_plan(folder, model, layers, k, target, preset, top_n, shard_size)
    out = Path(out)
    checkpoints = Checkpoints.open(out, plan, resume)
    done = sum(len(plan.shards()[index]) for index in checkpoints.done)
    if checkpoints.done and progress:
        print(f"resuming: {len(checkpoints.done)} of {len(plan.shards())} shards done", file=sys.stderr)
    with tqdm(total=len(plan.items), initial=done, unit="img", desc="atlas", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        if ray is None:
            run_local(plan, model, checkpoints, workers, batch_size, bar.update)
        else:
            from .distributed import run_ray

            run_ray(plan, model, checkpoints, ray, batch_size, bar.update)
    merged = Partial()
    for index in range(len(plan.shards())):
        merged.merge(checkpoints.load(index), plan.k)
    info = {"model": plan.model, "weights": plan.weights, "preset": plan.preset, "layers": plan.layers,
            "output": plan.output, "k": plan.k, "target": plan.target, "top_n": plan.top_n, "folder": plan.folder,
            "images": len(merged.images), "skipped": len(merged.skipped), "explained_by": merged.explained_by,
            "shapes": merged.shapes,
            "versions": {"lrp-widgets": version("lrp-widgets"), "torch": torch.__version__, "torchvision": torchvision.__version__}}
    write(out, merged, info, [item.path for item in plan.items])
    checkpoints.remove()
    return Atlas.open(out)
