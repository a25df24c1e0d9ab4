"""What the atlas keeps of each batch of explanations, in a form that merges exactly: per channel the top-K
images under four statistics, per class the sums behind each neuron's mean and spread, and the per-image
neuron graphs summed by class.

The statistics are zennit-crp's (``FeatureVisualization``'s RelMax and ActMax, ``max_target`` "sum" or
"max", ``abs_norm``): a channel's map summed, or its value at the map's maximum, divided by the sum over the
layer's channels of the absolute values of that statistic. The position kept is that of the map's maximum.

>>> import torch
>>> maps = torch.tensor([[[[1., 3.]], [[-2., 0.]]]])  # one image, two channels, 1×2 maps
>>> values, positions = channel_statistics(maps)
>>> values["sum"].round(decimals=3).tolist(), values["max"].round(decimals=3).tolist(), positions.tolist()
([[0.667, -0.333]], [[1.0, 0.0]], [[1, 1]])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..analysis.graph import NeuronGraph

#: the statistics the atlas ranks images by: (what, max_target) as zennit-crp names them
STATISTICS = ("relevance_sum", "relevance_max", "activation_sum", "activation_max")
#: crp's guard against a layer with nothing in it
NORM_EPSILON = 1e-10


def channel_statistics(maps: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``{"sum": (N, C), "max": (N, C)}`` normalised as crp's ``abs_norm``, and the flat position of each
    channel's maximum (N, C); a layer without maps (N, C) is its own map of one value."""
    flat = maps.reshape(*maps.shape[:2], -1).double()
    positions = flat.argmax(-1)
    values = {"sum": flat.sum(-1), "max": flat.gather(-1, positions[..., None])[..., 0]}
    return {kind: value / (value.abs().sum(-1, keepdim=True) + NORM_EPSILON) for kind, value in values.items()}, positions


@dataclass
class TopK:
    """The K highest values per channel and the images they come from (rows ordered: highest first, ties to the
    lower image number), with the (y, x) of the map's maximum."""

    values: np.ndarray  # (k, C) float64
    images: np.ndarray  # (k, C) int64
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> "TopK":
        return cls(np.empty((0, channels)), *(np.empty((0, channels), dtype=np.int64) for _ in range(3)))

    def add(self, other: "TopK", k: int) -> "TopK":
        values = np.concatenate([self.values, other.values])
        images, y, x = (np.concatenate([a, b]) for a, b in ((self.images, other.images), (self.y, other.y),
                                                            (self.x, other.x)))
        order = np.lexsort((images, -values), axis=0)[:k]
        return TopK(*(np.take_along_axis(a, order, 0) for a in (values, images, y, x)))


@dataclass
class ClassSums:
    """Per layer, Σ and Σ² of each channel's relevance over the class's images, and how many images."""

    count: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    squares: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, other: "ClassSums") -> None:
        self.count += other.count
        for layer in other.sums:
            self.sums[layer] = self.sums.get(layer, 0) + other.sums[layer]
            self.squares[layer] = self.squares.get(layer, 0) + other.squares[layer]


@dataclass
class Partial:
    """What one shard of the folder contributes; ``merge`` of partials in shard order is the atlas."""

    top: dict[tuple[str, str], TopK] = field(default_factory=dict)
    classes: dict[int, ClassSums] = field(default_factory=dict)
    #: (class, upper layer, upper channel, lower layer, lower channel) → [Σ flow over the class's images whose
    #: graph has the edge, how many]
    edges: dict[tuple, list] = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: the processes (host:pid) that explained the images
    explained_by: list[str] = field(default_factory=list)
    #: each layer's map size (height, width), for cropping reference images
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add_top(self, layer: str, statistic: str, top: TopK, k: int) -> None:
        key = (layer, statistic)
        self.top[key] = self.top[key].add(top, k) if key in self.top else top.add(TopK.empty(top.values.shape[1]), k)

    def add_graph(self, label: int, graph: NeuronGraph, names: dict[str, str]) -> None:
        for upper, lower, flow in graph.edges():
            _accumulate(self.edges, (label, names[upper.layer], upper.index, names[lower.layer], lower.index), flow)

    def merge(self, other: "Partial", k: int) -> "Partial":
        for (layer, statistic), top in other.top.items():
            self.add_top(layer, statistic, top, k)
        for label, sums in other.classes.items():
            self.classes.setdefault(label, ClassSums()).add(sums)
        for key, (total, count) in other.edges.items():
            _accumulate(self.edges, key, total, count)
        self.images += other.images
        self.skipped += other.skipped
        self.explained_by += [who for who in other.explained_by if who not in self.explained_by]
        self.shapes.update(other.shapes)
        return self


def _accumulate(table: dict, key, value: float, count: int = 1) -> None:
    entry = table.setdefault(key, [0.0, 0])
    entry[0] += value
    entry[1] += count


def batch_top(values: torch.Tensor, positions: torch.Tensor, images: np.ndarray, width: int, k: int) -> TopK:
    """The batch's top ``k`` per channel: ``values``/``positions`` (N, C), ``images`` the N image numbers."""
    values = values.cpu().numpy()
    positions = positions.cpu().numpy()
    numbers = np.broadcast_to(images[:, None], values.shape)
    order = np.lexsort((numbers, -values), axis=0)[:k]
    position = np.take_along_axis(positions, order, 0)
    return TopK(np.take_along_axis(values, order, 0), np.take_along_axis(numbers, order, 0).copy(),
                position // width, position % width)
