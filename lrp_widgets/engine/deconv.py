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

from ..errors import ModelError, TargetError
from .lrp import Backward, Explainer, Explanation
from .operations import Backstep

MODES = ("map", "max")


@torch.no_grad()
def record(model: nn.Module, x: Tensor) -> Explanation:
    """One forward pass stored as an :class:`Explanation` without relevances: all that
    :func:`deconvolve` needs, at the cost of the forward pass alone."""
    explainer = Explainer(model)
    x = explainer.check_input(x)
    activations, indices, _, others = explainer.forward(x)
    logits = activations[explainer.network.output]
    return Explanation(explainer.network, x, logits, logits.argmax(1), activations, {}, {}, indices, others)


@torch.no_grad()
def deconvolve(explanation: Explanation, layer: str, channels: int | Sequence[int] | Tensor, image: int = 0,
               mode: str = "map") -> Tensor:
    """The deconvnet reconstruction of each of ``channels`` at the output of ``layer``, for image ``image``
    of the stored batch: shape (N, *input shape), all N in one batched pass down. ``layer``: a step's or a
    block's name.

    The start signal holds the channel's activations as the following ReLU passes them on
    (rectified, as in Zeiler & Fergus), every other feature map zero: the whole map (``mode="map"``)
    or only its maximum (``mode="max"``).
    Any step can be the start; for a Linear layer a channel is one unit and both modes agree. Through the
    rest of the network the signal is the gradient with every ReLU rectifying it: both branches of an
    addition get it, a concatenation splits it.
    Equal to Captum's ``NeuronDeconvolution`` at the layer with the selector ``½ Σ relu(a)²`` (map) or the
    ``(channel, h, w)`` tuple of the maximum, times its rectified activation (max).
    """
    names = explanation.names
    layer = explanation.network.blocks.get(layer, layer)  # a block's name: its output
    if layer not in names:
        raise TargetError(f"unknown layer '{layer}': choose one of {names[0]} … {names[-1]}")
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': use 'map' or 'max'")
    size = explanation.inputs.shape[0]
    if not 0 <= image < size:
        raise TargetError(f"image {image} out of range: the explanation holds images 0–{size - 1}")
    gap = deconvnet_gap(explanation, layer)
    if gap:
        raise ModelError(gap)
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
    signal = out.new_zeros(n, *out.shape)
    signal[torch.arange(n, device=out.device), channels] = values.clamp(min=0).reshape(n, *out.shape[1:])
    return explanation.propagate(signal, layer, image=image, channels={layer: channels},
                                 backward=_deconvnet(explanation, image))


def deconvnet_gap(explanation: Explanation, layer: str) -> str:
    """Why the deconvnet cannot start at ``layer`` (a step below it it has no step for, e.g. attention), or ""."""
    network = explanation.network
    blind = next((network.by_name[name] for name in explanation.region(network.blocks.get(layer, layer))
                  if network.by_name[name].op is not None and network.by_name[name].op.deconv is None), None)
    if blind is None:
        return ""
    return (f"the deconvnet has no step for '{blind.name}' ({blind.operation}): it reconstructs what convolutions "
            "detect, not what passes attention; the neuron's conditional relevance shows its part instead")


def _deconvnet(explanation: Explanation, image: int) -> Backward:
    """One deconvnet step (the registry entry's): the signal at a step's output → at each of its inputs."""
    def step(name: str, signal: Tensor, keep: Tensor | None) -> tuple:
        network_step = explanation.network.by_name[name]
        if network_step.op is None or network_step.op.deconv is None:
            raise ModelError(explanation.network.unsupported(name))
        backstep = Backstep(network_step.module, [explanation.value(source) for source in network_step.inputs],
                            explanation.value(name), explanation.maxpool_indices.get(name),
                            explanation.function(name), image)
        return network_step.op.deconv(backstep, signal, keep)
    return step
