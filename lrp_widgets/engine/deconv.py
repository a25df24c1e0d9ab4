"""The deconvnet of Zeiler & Fergus (the paper's Algorithms 2–3) on a stored forward pass.

One neuron's feature map goes back down to pixel space: max-pooling is undone through the stored
switches, ReLU rectifies the signal, a convolution becomes its transpose with the same weights and no
bias. ``explain`` (or :func:`record`) has stored all it needs; no new forward pass runs.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).eval()
>>> deconvolve(record(model, torch.randn(1, 3, 8, 8)), "0", [0, 3]).shape
torch.Size([2, 3, 8, 8])
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import TargetError
from .lrp import Explainer, Explanation
from .rules import transpose, transpose_channels, unpool

MODES = ("map", "max")


@torch.no_grad()
def record(model: nn.Module, x: Tensor) -> Explanation:
    """One forward pass stored as an :class:`Explanation` without relevances: all that
    :func:`deconvolve` needs, at the cost of the forward pass alone."""
    explainer = Explainer(model)
    x = x.to(explainer.device)
    activations, indices, _ = explainer.forward(x)
    logits = activations[explainer.layers[-1].name]
    return Explanation(explainer.layers, x, logits, logits.argmax(1), activations, {}, {}, indices)


@torch.no_grad()
def deconvolve(explanation: Explanation, layer: str, channels: int | Sequence[int] | Tensor, image: int = 0,
               mode: str = "map") -> Tensor:
    """The deconvnet reconstruction of each of ``channels`` at the output of ``layer``, for image ``image``
    of the stored batch: shape (N, *input shape), all N in one batched pass down.

    The start signal holds the channel's activations as the following ReLU passes them on
    (rectified, as in Zeiler & Fergus), every other feature map zero: the whole map (``mode="map"``)
    or only its maximum (``mode="max"``).
    Any layer can be the start; for a Linear layer a channel is one unit and both modes agree.
    Equal to Captum's ``NeuronDeconvolution`` at the layer with the selector ``½ Σ relu(a)²`` (map) or the
    ``(channel, h, w)`` tuple of the maximum, times its rectified activation (max).
    """
    names = explanation.names
    if layer not in names:
        raise TargetError(f"unknown layer '{layer}': choose one of {names[0]} … {names[-1]}")
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': use 'map' or 'max'")
    size = explanation.inputs.shape[0]
    if not 0 <= image < size:
        raise TargetError(f"image {image} out of range: the explanation holds images 0–{size - 1}")
    out = explanation.activations[layer][image]
    channels = torch.as_tensor(channels, device=out.device).long().flatten()
    bad = channels[(channels < 0) | (channels >= out.shape[0])]
    if not channels.numel() or bad.numel():
        which = f"channel {int(bad[0])} out of range" if bad.numel() else "no channel given"
        raise TargetError(f"{which}: layer '{layer}' has channels 0–{out.shape[0] - 1}")
    n = channels.numel()
    values = out[channels].reshape(n, -1)
    if mode == "max":
        top = values.argmax(1, keepdim=True)
        values = torch.zeros_like(values).scatter_(1, top, values.gather(1, top))
    values = values.clamp(min=0).reshape(n, *out.shape[1:])

    index = names.index(layer)
    module = explanation.layers[index].module
    if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
        # one output channel per row: a grouped transposed convolution costs one channel per row
        signal = transpose_channels(module, values, module.weight, channels, _shape(explanation, layer, n))
    else:
        signal = out.new_zeros(n, *out.shape)
        signal[torch.arange(n, device=out.device), channels] = values
        index += 1
    for name, module in reversed(explanation.layers[:index]):
        signal = _down(module, signal, _shape(explanation, name, n), explanation.maxpool_indices.get(name), image)
    return signal


def _shape(explanation: Explanation, name: str, n: int) -> tuple[int, ...]:
    return (n, *explanation.input_of(name).shape[1:])


def _down(module: nn.Module, signal: Tensor, shape: tuple[int, ...], switches: Tensor | None, image: int) -> Tensor:
    """One deconvnet step: the signal at the layer's output → at its input (of ``shape``)."""
    if isinstance(module, nn.ReLU):
        return signal.relu_()  # the signal is always a fresh tensor
    if isinstance(module, (nn.Linear, nn.Conv2d)):  # the transpose with the layer's own weights, no bias
        return transpose(module, signal, module.weight, shape)
    if isinstance(module, nn.MaxPool2d):
        return unpool(signal, switches[image:image + 1], shape)
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        x = signal.new_zeros(shape).requires_grad_()
        with torch.enable_grad():
            return torch.autograd.grad(module(x), x, signal)[0]
    if isinstance(module, nn.Flatten):
        return signal.reshape(shape)
    return signal  # Dropout, Identity
