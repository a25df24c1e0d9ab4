"""Analysis on top of an explanation: the neuron graph, its k best paths, conditional heatmaps,
Algorithm 1 and the threshold sweep, and the cached :class:`Bundle` the app reads (figures and
rendering live in :mod:`.figures` and :mod:`.render`).

>>> import torch
>>> from lrp_widgets.engine import Explainer
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 2))
>>> explanation = Explainer(model).explain(torch.rand(1, 3, 4, 4))
>>> paths = k_best_paths(neuron_graph(explanation, top_n=2), k=2)
>>> path_relevance(explanation, paths).shape
torch.Size([2, 3, 4, 4])
"""
from .bundle import Bundle, NotCached, cached_only
from .graph import NeuronGraph, Node, channel_relevance, layer_flows, neuron_graph
from .heatmaps import (activation_maps, channel_masks, conditional_relevance, neuron_relevance, path_activation,
                       path_relevance, union_relevance)
from .paths import Path, best_paths, k_best_paths, path_channels, path_count
from .threshold import (DEFAULT_ALPHAS, Selection, Sweep, get_optimizer, masked_heatmaps, mse, neuron_scores, smape,
                        threshold_sweep)

__all__ = ["Bundle", "NotCached", "cached_only", "NeuronGraph", "Node", "channel_relevance", "layer_flows",
           "neuron_graph", "activation_maps", "channel_masks", "conditional_relevance", "neuron_relevance",
           "path_activation", "path_relevance", "union_relevance", "Path", "best_paths", "k_best_paths",
           "path_channels", "path_count", "DEFAULT_ALPHAS", "Selection", "Sweep", "get_optimizer", "masked_heatmaps",
           "mse", "neuron_scores", "smape", "threshold_sweep"]
