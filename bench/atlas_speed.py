"""Issue 18: the atlas against zennit-crp's FeatureVisualization on the same folder, model, rules and threads.

A folder of 48 images (6 WordNet-id classes, 500×375 JPEGs made from the case-study photographs) and 3 unreadable
files; VGG16 (random weights and biases), the paper's rules, conv4_3 and conv5_3 (crp hooked on their ReLUs),
batch 8, K = 40. Ours writes every table (references, class sums, class graphs) and decodes in 1 or 2 worker
processes; crp computes RelMax and ActMax ('sum', normalised) with its own threaded loading. Peak RSS of a whole
run (fresh process) for 48 and 480 images. The decoding rate per worker gives the ImageNet-val projection's
floor for decoding on 16 cores. With ``--device cuda`` (``bench/gpu.sh``): 480 images, batch 64, as many decoding
workers as cores, and the projection for ImageNet-val from the measured rate.
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .common import Row, compare, in_subprocess, peak_rss_mb

LAYERS = ["features.21", "features.28"]
IMAGENET_VAL = 50_000


def _model(device: str = "cpu"):
    from lrp_widgets.engine.models import LoadedModel
    from torchvision.models import VGG16_Weights

    from .models import vgg16

    return LoadedModel.of(vgg16(device), VGG16_Weights.IMAGENET1K_V1.meta["categories"], "vgg16")


def _folder(per_class: int) -> Path:
    from tests.atlas_folders import case_study_folder

    return case_study_folder(Path(tempfile.mkdtemp(prefix="atlas-bench-")), per_class, size=(500, 375))


def ours(folder: Path, workers: int, device: str = "cpu", batch_size: int = 8) -> float:
    from lrp_widgets.atlas import build_atlas

    model = _model(device)
    start = time.perf_counter()
    build_atlas(folder, model, Path(tempfile.mkdtemp()), LAYERS, progress=False, workers=workers, batch_size=batch_size)
    return time.perf_counter() - start


def crp(folder: Path, device: str = "cpu", batch_size: int = 8) -> float:
    from lrp_widgets.atlas.folder import list_images
    from tests.atlas_folders import BAD_FILES
    from tests.peers import FolderDataset, crp_references

    model = _model(device)
    readable = [item for item in list_images(folder, model.categories) if item.path not in BAD_FILES]
    start = time.perf_counter()
    crp_references(model.module, FolderDataset(folder, readable, model.preprocess), ["features.22", "features.29"],
                   "sum", Path(tempfile.mkdtemp()), batch_size=batch_size)
    return time.perf_counter() - start


def decode_rate(folder: Path) -> float:
    """Images per second one process decodes and preprocesses."""
    from lrp_widgets.atlas.folder import ImageFolder, list_images

    model = _model()
    dataset = ImageFolder(folder, list_images(folder, model.categories), model.preprocess)
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def peak_of_run(per_class: str, threads: str) -> dict:
    """In a fresh process: a whole atlas run over ``6 × per_class`` images; its peak RSS."""
    torch.set_num_threads(int(threads))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = ours(_folder(int(per_class)), 2)
    return {"peak_mb": peak_rss_mb(), "seconds": seconds}


def on_gpu() -> list[Row]:
    """480 images, batch 64, a decoding worker per core; the ImageNet-val projection from the measured rate."""
    import os

    folder, images, workers = _folder(80), 480, os.cpu_count() or 1
    rows = [Row("atlas 480 img cuda", f"ours, {workers} workers", ours(folder, workers, "cuda", 64), 1),
            Row("atlas 480 img cuda", "zennit-crp FeatureVisualization", crp(folder, "cuda", 64), 1)]
    compare(rows, rows[1].case, rows[0].case, "≥ 1.5×")
    rows[0].extra = {"images_per_s": images / rows[0].median_s,
                     "imagenet_val_projection_s": IMAGENET_VAL * rows[0].median_s / images}
    print(f"ImageNet-val on this node: {IMAGENET_VAL * rows[0].median_s / images:.0f} s (goal ≤ 180 s)", flush=True)
    return rows


def run(repeat: int = 1, threads: int = 2, device: str = "cpu") -> list[Row]:
    torch.set_num_threads(threads)
    if device == "cuda":
        return on_gpu()
    folder = _folder(8)
    images = 48
    rows = []
    for case, fn in {"ours, 1 worker": lambda: ours(folder, 1), "ours, 2 workers": lambda: ours(folder, 2),
                     "zennit-crp FeatureVisualization": lambda: crp(folder)}.items():
        seconds = min(fn() for _ in range(max(1, repeat // 3)))
        rows.append(Row("atlas 48 img", case, seconds, 1, extra={"images_per_s": images / seconds}))
        print(f"atlas {case:34s} {seconds:6.1f} s  {images / seconds:5.2f} img/s", flush=True)
    compare(rows, "zennit-crp FeatureVisualization", "ours, 1 worker", "≥ 1.5×")
    compare(rows, "ours, 2 workers", "ours, 1 worker")
    for per_class in (8, 80):
        result = in_subprocess("bench.atlas_speed", "peak_of_run", str(per_class), str(threads))
        rows.append(Row("atlas memory", f"whole run, {6 * per_class} images", result["seconds"], 1,
                        peak_mb=result["peak_mb"]))
        print(f"atlas {6 * per_class} images: peak RSS {result['peak_mb']:.0f} MB", flush=True)
    small, large = rows[-2], rows[-1]
    large.baseline, large.ratio, large.target = small.case, large.peak_mb / small.peak_mb, "peak ≤ 1.1×"
    rate = decode_rate(folder)
    ours_rate = images / rows[0].median_s
    rows.append(Row("atlas projection", "decoding, 1 process", images / rate, 1, extra={
        "images_per_s": rate, "imagenet_val_decoding_16_cores_s": IMAGENET_VAL / (16 * rate),
        "imagenet_val_this_machine_s": IMAGENET_VAL / ours_rate}))
    print(f"decoding {rate:.1f} img/s per process: ImageNet-val decoding on 16 cores "
          f"≥ {IMAGENET_VAL / (16 * rate):.0f} s; the whole atlas on this machine {IMAGENET_VAL / ours_rate / 3600:.1f} h",
          file=sys.stderr, flush=True)
    return rows
