"""Issue 3 (deconvnet): one channel from a stored forward pass, the same with its forward pass,
and Captum's NeuronDeconvolution of the same neuron.

VGG16, batch 1 (the castle), the strongest channel at ``features.28`` and ``features.14``, the whole
feature map as the start signal (Captum: the callable selector of ``tests.peers.captum_deconvolution``).
"""
from __future__ import annotations

import torch

from lrp_widgets.engine.deconv import deconvolve, record
from tests.peers import captum_deconvolution

from .common import Row, compare, median_time
from .models import batch, vgg16

LAYERS = ("features.28", "features.14")


def run(repeat: int = 5, threads: int = 2, device: str = "cpu") -> list[Row]:
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model, x = vgg16(device), batch(1, device)
    stored = record(model, x)
    rows = []
    for layer in LAYERS:
        out = stored.activations[layer][0]
        channel = int(out.flatten(1).amax(1).argmax())
        captum = captum_deconvolution(model, layer, channel)
        cases = {"ours stored": lambda: deconvolve(stored, layer, [channel]),
                 "ours forward + deconv": lambda: deconvolve(record(model, x), layer, [channel]),
                 "captum": lambda: captum(x)}
        suite = f"deconv {layer} c{channel}"
        for case, fn in cases.items():
            seconds = median_time(fn, repeat, sync=sync)
            rows.append(Row(suite, case, seconds, repeat))
            print(f"{suite:22s} {case:22s} {seconds * 1000:8.1f} ms", flush=True)
        group = rows[-len(cases):]
        compare(group, "ours stored", "captum", "≤ 1×")
        compare(group, "ours forward + deconv", "captum", "≤ 1×")
    return rows
