"""The neuron graph: the most relevant channels/units of each chosen layer and the relevance that flows
between them (zennit-crp's "attribution graph"). The layers default to the family's blocks and the output
(ResNet's residual blocks, DenseNet's dense blocks and transitions …), else every Conv2d/Linear layer that
all relevance passes (VGG, a network of the user's own): see :func:`~lrp_widgets.engine.families.graph_layers`.

Nodes are scored by their relevance summed over space; the top-N per layer are kept (the top layer
keeps only the class node). The edge from upper node k to lower node j carries R_{j←k}: the relevance
that reaches j when only k's relevance is propagated down (through k's rule and the ReLU/pooling in
between). Flows into j from all kept upper nodes add up to j's relevance restricted to those nodes.
One batched, channel-sparse backward step per layer computes all of them.

>>> import torch
>>> from lrp_widgets.engine import Explainer
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> graph = neuron_graph(Explainer(model).explain(torch.rand(1, 4)), top_n=2)
>>> [len(graph.nodes[layer]) for layer in graph.layers]
[2, 1]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.families import graph_layers
from ..engine.lrp import Explanation, channel_totals
from ..errors import ModelError, TargetError


@dataclass(frozen=True)
class Node:
    layer: str
    index: int
    relevance: float

    @property
    def id(self) -> str:
        return f"{self.layer}:{self.index}"


@dataclass
class NeuronGraph:
    """Kept nodes per layer (``layers`` runs from the input side to the class) and edge flows."""

    layers: list[str]
    nodes: dict[str, list[Node]]
    flows: dict[tuple[str, str], torch.Tensor] = field(repr=False)  # (upper, lower) → (n_upper, n_lower)
    image: int = 0

    @property
    def class_node(self) -> Node:
        return self.nodes[self.layers[-1]][0]

    def edges(self) -> list[tuple[Node, Node, float]]:
        """(upper, lower, flow) for every pair of kept nodes in consecutive layers."""
        edges = []
        for upper, lower in zip(self.layers[:0:-1], self.layers[-2::-1]):
            matrix = self.flows[upper, lower]
            for i, source in enumerate(self.nodes[upper]):
                for j, target in enumerate(self.nodes[lower]):
                    edges.append((source, target, float(matrix[i, j])))
        return edges

    def flow(self, upper: Node, lower: Node) -> float:
        matrix = self.flows[upper.layer, lower.layer]
        return float(matrix[self.nodes[upper.layer].index(upper), self.nodes[lower.layer].index(lower)])

    def to_cytoscape(self) -> dict:
        """``{"nodes": [{"data": {id, layer, index, relevance}}], "edges": [{"data": {source, target, weight}}]}``."""
        nodes = [{"data": {"id": n.id, "layer": n.layer, "index": n.index, "relevance": n.relevance}}
                 for layer in self.layers for n in self.nodes[layer]]
        edges = [{"data": {"id": f"{u.id}->{v.id}", "source": u.id, "target": v.id, "weight": w}}
                 for u, v, w in self.edges()]
        return {"nodes": nodes, "edges": edges}

    def to_networkx(self):
        """A ``networkx.DiGraph`` with edges from upper to lower nodes, ``weight`` = flow (needs networkx)."""
        try:
            import networkx as nx
        except ModuleNotFoundError:
            raise ModuleNotFoundError("NeuronGraph.to_networkx needs networkx: pip install networkx") from None

        graph = nx.DiGraph()
        for layer in self.layers:
            for n in self.nodes[layer]:
                graph.add_node(n.id, layer=n.layer, index=n.index, relevance=n.relevance)
        graph.add_weighted_edges_from((u.id, v.id, w) for u, v, w in self.edges())
        return graph


def channel_relevance(explanation: Explanation, layer: str, image: int = 0) -> torch.Tensor:
    """Relevance of every channel/unit of a layer, summed over space: shape (C,)."""
    return channel_totals(explanation.relevances[layer][image:image + 1])[0]


def neuron_graph(explanation: Explanation, top_n: int = 8, layers: list[str] | None = None,
                 image: int = 0) -> NeuronGraph:
    """The graph of the ``top_n`` most relevant nodes of each layer and the flows between them; the model's
    output layer keeps only the explained class.

    ``layers``: step or module names (a block's name stands for its output); default: the family's
    (VGG: every Conv2d/Linear layer; ResNet: every residual block's output; DenseNet: every dense block
    and transition; see :func:`~lrp_widgets.engine.families.graph_layers`). Between two layers,
    flows pass every branch in between.
    """
    network = explanation.network
    try:
        layers = [network.resolve(name) for name in layers] if layers else graph_layers(network)
    except ModelError as error:
        raise TargetError(str(error)) from None
    unknown = [name for name in layers if name not in explanation.relevances]
    if unknown:
        raise TargetError(f"layer '{unknown[0]}' carries no relevance: choose one of {', '.join(graph_layers(network))}")
    order = explanation.names
    layers = sorted(dict.fromkeys(layers), key=order.index)
    nodes = {}
    for layer in layers:
        scores = channel_relevance(explanation, layer, image)
        if layer == network.output:  # the output layer: only the explained class
            target = int(explanation.targets[image])
            nodes[layer] = [Node(layer, target, float(scores[target]))]
            continue
        kept = scores.topk(min(top_n, scores.numel())).indices
        nodes[layer] = [Node(layer, int(i), float(scores[i])) for i in kept]
    flows = {}
    for upper, lower in zip(layers[:0:-1], layers[-2::-1]):
        flows[upper, lower] = layer_flows(explanation, upper, [n.index for n in nodes[upper]], lower,
                                          [n.index for n in nodes[lower]], image)
    return NeuronGraph(layers, nodes, flows, image)


def layer_flows(explanation: Explanation, upper: str, upper_nodes: list[int], lower: str, lower_nodes: list[int],
                image: int = 0) -> torch.Tensor:
    """R_{j←k} for upper nodes k and lower nodes j: shape (len(upper_nodes), len(lower_nodes))."""
    channels = torch.tensor(upper_nodes, device=explanation.inputs.device)
    start = explanation.relevances[upper][image:image + 1].expand(len(upper_nodes), *explanation.relevances[upper].shape[1:])
    per_channel = explanation.propagate(start, upper, lower, image=image, channels={upper: channels},
                                        reduce=channel_totals)
    return per_channel[:, lower_nodes].cpu()
