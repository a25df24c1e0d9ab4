"""Conditional heatmaps (relevance kept only in chosen neurons) and activation heatmaps of paths.

Relevance-based (the paper's Fig. 6): the input relevance when, at every layer of the paths, the
relevance is kept only in the paths' neurons — each path on its own (one channel-sparse batch) or
their union (one pass with multi-channel masks). This is zennit-crp's ``CondAttribution`` with
channel conditions. Activation-based (Fig. 7): the paths' conv neurons' activation maps, rectified,
upsampled to the image, each scaled to [0, 1], averaged.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..engine.lrp import Explanation, patch_grid
from ..errors import TargetError
from .paths import Path, path_channels


def _start(explanation: Explanation, layer: str, rows: int, image: int) -> torch.Tensor:
    relevance = explanation.relevances[layer][image:image + 1]
    return relevance.expand(rows, *relevance.shape[1:])


def path_relevance(explanation: Explanation, paths: Sequence[Path], image: int = 0) -> torch.Tensor:
    """Input relevance conditioned on each path: (len(paths), C, H, W), one channel-sparse batch."""
    channels = path_channels(list(paths), explanation.inputs.device)
    top = paths[0].nodes[0].layer
    return explanation.propagate(_start(explanation, top, len(paths), image), top, image=image, channels=channels)


def channel_masks(explanation: Explanation, neurons: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Multi-hot masks keeping the given channels of each layer, in the layer's layout ((1, C, 1, 1), (1, C) or
    (1, 1, D) for tokens)."""
    masks = {}
    for layer, indices in neurons.items():
        size = explanation.maps(layer).shape[1]
        mask = torch.zeros(1, size, device=explanation.inputs.device)
        if len(indices) and (max(indices) >= size or min(indices) < 0):
            raise TargetError(f"layer '{layer}' has channels 0–{size - 1}, not {max(indices)}")
        mask[0, list(indices)] = 1
        masks[layer] = explanation.channel_mask(layer, mask)
    return masks


def conditional_relevance(explanation: Explanation, neurons: Mapping[str, Sequence[int]],
                          image: int = 0) -> torch.Tensor:
    """Input relevance with the relevance kept only in ``neurons[layer]`` at each given layer: (1, C, H, W)."""
    masks = channel_masks(explanation, neurons)
    top = max(masks, key=explanation.names.index)
    return explanation.propagate(_start(explanation, top, 1, image), top, image=image, masks=masks)


def union_relevance(explanation: Explanation, paths: Sequence[Path], image: int = 0) -> torch.Tensor:
    """Input relevance conditioned on the union of the paths' neurons at every layer: (1, C, H, W)."""
    neurons: dict[str, set[int]] = {}
    for path in paths:
        for node in path.nodes:
            neurons.setdefault(node.layer, set()).add(node.index)
    return conditional_relevance(explanation, {layer: sorted(indices) for layer, indices in neurons.items()}, image)


def neuron_relevance(explanation: Explanation, layer: str, channels: Sequence[int], image: int = 0) -> torch.Tensor:
    """Input relevance of single neurons (one row per channel of ``layer``), one channel-sparse batch."""
    index = torch.tensor(list(channels), device=explanation.inputs.device)
    size = explanation.maps(layer).shape[1]
    if index.numel() and (int(index.max()) >= size or int(index.min()) < 0):
        raise TargetError(f"layer '{layer}' has channels 0–{size - 1}")
    return explanation.propagate(_start(explanation, layer, len(index), image), layer, image=image,
                                 channels={layer: index})


def activation_maps(explanation: Explanation, neurons: Sequence[tuple[str, int]], image: int = 0,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """The rectified activation maps of conv neurons (and of transformer channels over the patch grid), upsampled to
    the input and scaled to [0, 1]: (N, H, W). Units of linear layers have no map and are skipped."""
    size = size or tuple(explanation.inputs.shape[-2:])
    maps = []
    for layer, index in neurons:
        activation = feature_map(explanation.maps(layer, relevance=False)[image, index])
        if activation is None:
            continue
        values = F.relu(activation)[None, None]
        values = F.interpolate(values, size=size, mode="bilinear", align_corners=False)[0, 0]
        top = values.max()
        maps.append(values / top if top > 0 else values)
    return torch.stack(maps) if maps else explanation.inputs.new_zeros(0, *size)


def feature_map(values: torch.Tensor) -> torch.Tensor | None:
    """One channel's values as a map (H, W): a feature map as it is, tokens on their patch grid (leading tokens such
    as a class token left out); ``None`` for a unit of a linear layer or tokens on no grid."""
    if values.dim() == 2:
        return values
    grid = patch_grid(values.shape[0]) if values.dim() == 1 and values.numel() > 1 else None
    if grid is None:
        return None
    lead, h, w = grid
    return values[lead:].reshape(h, w)


def path_activation(explanation: Explanation, paths: Sequence[Path], image: int = 0) -> torch.Tensor:
    """The mean of the distinct conv neurons' activation maps of the paths, in [0, 1]: (H, W)."""
    neurons = list(dict.fromkeys((node.layer, node.index) for path in paths for node in path.nodes))
    maps = activation_maps(explanation, neurons, image)
    return maps.mean(0) if len(maps) else explanation.inputs.new_zeros(explanation.inputs.shape[-2:])

