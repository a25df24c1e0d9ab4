"""Forward pass, our explanation, zennit with the same composite, Captum's LRP; VGG16, ResNet-50,
EfficientNet-B0 and ConvNeXt-T; ViT-B/16 against LXT (its CP-LRP patches, input × gradient: LRP-0, our ``zero``).

Captum has no z^B rule (nor one for the residual addition), so it is timed on VGG16's ``epsilon`` preset
(LRP-ε everywhere), next to ours on the same preset; zennit is timed on the ``paper`` preset next to ours
(on ResNet-50 with its ResNetCanonizer). EfficientNet-B0 and ConvNeXt-T: the forward pass and ours only
(tests/peers.py has no zennit counterpart for the rules of their gates: squeeze-excitation, layer scale).
"""
from __future__ import annotations

from typing import Callable

import torch

from lrp_widgets.engine import Explainer
from tests.peers import captum_lrp, lxt_relevance, zennit_relevance

from .common import Row, compare, in_subprocess, median_time, peak_extra_mb
from .models import batch, model as make_model

CASES = {"vgg16": ("forward", "ours paper", "zennit paper", "ours epsilon", "captum epsilon"),
         "resnet50": ("forward", "ours paper", "zennit paper"),
         "efficientnet_b0": ("forward", "ours paper"),
         "convnext_tiny": ("forward", "ours paper"),
         "vit_b_16": ("forward", "ours zero", "lxt zero")}


def workload(case: str, size: int, device: str = "cpu", name: str = "vgg16") -> Callable[[], object]:
    model, x = make_model(name, device), batch(size, device)
    if case == "forward":
        return lambda: _no_grad(model, x)
    if case.startswith("ours"):
        explainer = Explainer(model, case.split()[1])
        return lambda: explainer.explain(x)
    if case == "zennit paper":
        return lambda: zennit_relevance(model, x, "paper")
    if case == "lxt zero":
        return lambda: lxt_relevance(model, x, 0)
    return lambda: captum_lrp(model, x, 0.25)


def _no_grad(model, x):
    with torch.no_grad():
        return model(x)


def peak(case: str, size: str, threads: str, name: str = "vgg16") -> float:
    torch.set_num_threads(int(threads))
    fn = workload(case, int(size), name=name)
    fn()
    return peak_extra_mb(fn)


def run(repeat: int = 5, threads: int = 2, device: str = "cpu", sizes: tuple[int, ...] | None = None,
        names: tuple[str, ...] | None = None) -> list[Row]:
    sizes = sizes or ((1, 8) if device == "cpu" else (1, 64))
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for name, cases in CASES.items():
        if names is not None and name not in names:
            continue
        for size in sizes:
            suite = f"lrp b{size}" if name == "vgg16" else f"lrp {name} b{size}"
            for case in cases:
                seconds = median_time(workload(case, size, device, name), repeat, sync=sync)
                memory = (in_subprocess("bench.lrp_speed", "peak", case, str(size), str(threads), name)
                          if device == "cpu" else None)
                rows.append(Row(suite, case, seconds, repeat, memory))
                print(f"{suite:24s} {case:16s} {seconds * 1000:8.1f} ms", flush=True)
            group = rows[-len(cases):]
            ours = next(case for case in cases if case.startswith("ours"))
            compare(group, ours, "forward", "≤ 3×")
            if "zennit paper" in cases:
                compare(group, "zennit paper", "ours paper", "> 1×")
            if "captum epsilon" in cases:
                compare(group, "captum epsilon", "ours epsilon", "> 1×")
            if "lxt zero" in cases:
                compare(group, "lxt zero", "ours zero", "> 1×")
    return rows
