"""Paths through the neuron graph: from the class node down through one node per layer.

A path's score is the sum of its edge flows. The "longest path" is the highest-scoring one; the
k best paths are found exactly by dynamic programming over the layered graph (each node keeps its
k best partial paths from the class node), among n = Π (nodes per layer) possible paths.

>>> best_paths([[[1.0, 5.0]], [[0.0, 2.0], [3.0, 1.0]]], k=2)
[(8.0, [0, 1, 0]), (6.0, [0, 1, 1])]
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from .graph import NeuronGraph, Node


@dataclass(frozen=True)
class Path:
    nodes: tuple[Node, ...]  # class node first, lowest layer last
    score: float

    def as_pairs(self) -> list[list]:
        return [[node.layer, node.index] for node in self.nodes]

    @property
    def edges(self) -> set[tuple[str, str]]:
        """Its edges as (upper node id, lower node id)."""
        return {(u.id, v.id) for u, v in zip(self.nodes, self.nodes[1:])}


def best_paths(flows: list[list[list[float]]], k: int) -> list[tuple[float, list[int]]]:
    """The k highest-scoring paths through a layered graph, as (score, [position per layer]).

    ``flows[l][i][j]`` is the edge weight from node i of layer l to node j of layer l + 1, the top
    layer first.
    """
    partial: list[list[tuple[float, list[int]]]] = [[(0.0, [i])] for i in range(len(flows[0]))]
    for matrix in flows:
        following = []
        for j in range(len(matrix[0])):
            candidates = ((score + matrix[path[-1]][j], path + [j]) for paths in partial for score, path in paths)
            following.append(heapq.nlargest(k, candidates, key=lambda item: item[0]))
        partial = following
    return heapq.nlargest(k, (item for paths in partial for item in paths), key=lambda item: item[0])


def k_best_paths(graph: NeuronGraph, k: int = 5) -> list[Path]:
    """The k best paths of a neuron graph, best first (the first one is the longest path)."""
    top_down = graph.layers[::-1]
    flows = [graph.flows[upper, lower].tolist() for upper, lower in zip(top_down, top_down[1:])]
    return [Path(tuple(graph.nodes[layer][i] for layer, i in zip(top_down, positions)), score)
            for score, positions in best_paths(flows, k)]


def path_count(graph: NeuronGraph) -> int:
    """n: the number of possible paths from the class node to the lowest layer."""
    return math.prod(len(graph.nodes[layer]) for layer in graph.layers)


def path_channels(paths: list[Path], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per layer, the channel of each path (one row per path): the channel-sparse conditions."""
    layers = [node.layer for node in paths[0].nodes]
    return {layer: torch.tensor([path.nodes[i].index for path in paths], device=device)
            for i, layer in enumerate(layers)}
