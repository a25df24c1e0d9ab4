"""Everything derived from one explanation, computed on first use and cached: the graph, the k best
paths, path heatmaps, threshold sweeps, masked heatmaps, neuron heatmaps and deconvolutions.

The session computes on a worker thread; inside :func:`cached_only` (the kernel's thread answering a
request at once) a bundle only answers from its cache and raises :class:`NotCached` for anything it would
have to compute. Nothing here redoes the forward pass or the full backward pass.

>>> import warnings, torch
>>> from PIL import Image
>>> from lrp_widgets.engine.models import load_model
>>> with warnings.catch_warnings(record=True):
...     model = load_model("vgg11", "random")
>>> bundle = Bundle.explain(model, Image.new("RGB", (64, 64), "gray"))
>>> len(bundle.paths(k=3)), bundle.graph().layers[-1]
(3, 'classifier.6')
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from ..engine.deconv import deconvolve
from ..engine.families import display_names
from ..engine.images import display_image
from ..engine.lrp import INPUT, Explanation
from ..engine.models import LoadedModel
from ..engine.predict import explain_image, top_predictions
from .graph import NeuronGraph, neuron_graph
from .heatmaps import activation_maps, neuron_relevance, path_activation, path_relevance, union_relevance
from .paths import Path, k_best_paths, path_count
from .render import greyscale, input_picture
from .threshold import DEFAULT_ALPHAS, Selection, Sweep, get_optimizer, masked_heatmaps, sweep_of

#: a class score, or input relevance per unit of class score, below this is "nothing to show"
VANISHING = 1e-6
#: α values of the sweep computed together (one propagation): a newer request waits at most for one chunk
SWEEP_CHUNK = 2

_cache_only = threading.local()


class NotCached(LookupError):
    """Raised inside :func:`cached_only` for a result a bundle has not computed yet."""


@contextmanager
def cached_only():
    """On this thread, bundles answer from their caches and raise :class:`NotCached` instead of computing."""
    _cache_only.active = True
    try:
        yield
    finally:
        _cache_only.active = False


@dataclass(eq=False)
class Bundle:
    model: LoadedModel
    image: Image.Image
    explanation: Explanation
    top_n: int = 8
    #: the neuron graph's layers (default: the family's, see :func:`~lrp_widgets.analysis.graph.neuron_graph`)
    graph_layers: list[str] | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def explain(cls, model: LoadedModel, image: Image.Image, target: int | None = None, preset: str = "paper",
                top_n: int = 8) -> "Bundle":
        return cls(model, image, explain_image(model, image, target=target, preset=preset), top_n)

    def _cached(self, key, compute):
        if getattr(_cache_only, "active", False):
            try:
                return self._cache[key]  # no lock: a worker may hold it for seconds
            except KeyError:
                raise NotCached(key) from None
        with self._lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

    @property
    def target(self) -> int:
        return int(self.explanation.targets[0])

    @cached_property
    def vanishing(self) -> str | None:
        """Why there is nothing to see, when the class score or its relevance at the input is (nearly) zero —
        an untrained deep network's signal often dies out on the way — else None."""
        score = float(self.explanation.output_relevance[0])
        relevance = float(self.input_relevance.abs().sum())
        if abs(score) < VANISHING:
            return (f"the class score is {score:.2g}: the signal dies out before the output (typical of untrained "
                    "weights), so there is no relevance to show")
        if relevance < VANISHING * abs(score):
            return (f"the relevance vanishes on its way to the input (Σ|R| = {relevance:.2g} for a class score of "
                    f"{score:.2g}; typical of untrained weights): no heatmap, paths or sweep to show")
        return None

    @cached_property
    def picture(self) -> np.ndarray:
        """The 224×224 crop the model sees, uint8 RGB; with a model's own transform, its input itself."""
        if self.model.transform is not None:
            return input_picture(self.explanation.inputs[0])
        return display_image(self.image)

    @cached_property
    def grey_picture(self) -> np.ndarray:
        """The crop in light grey: the background of the relevance heatmaps."""
        return greyscale(self.picture)

    @cached_property
    def predictions(self) -> list[dict]:
        return top_predictions(self.explanation, self.model, 5)

    @property
    def input_relevance(self) -> torch.Tensor:
        return self.explanation.relevances[INPUT][0]

    @cached_property
    def layer_names(self) -> dict[str, str]:
        """Readable layer names (VGG: conv1_1 … conv5_3, pool1 … pool5, fc6 … fc8) by module name."""
        return display_names(self.explanation.network)

    def layer_name(self, layer: str) -> str:
        return self.layer_names.get(layer, layer)

    @property
    def conv_layers(self) -> list[str]:
        """The graph's layers with feature maps (VGG: the convs; ResNet: the blocks): the α layer's choices."""
        return self.explanation.map_layers

    def graph(self) -> NeuronGraph:
        return self._cached(("graph", self.top_n),
                            lambda: neuron_graph(self.explanation, self.top_n, self.graph_layers))

    def paths(self, k: int = 5) -> list[Path]:
        return self._cached(("paths", self.top_n, k), lambda: k_best_paths(self.graph(), k))

    def path_count(self) -> int:
        return path_count(self.graph())

    def path_relevance(self, k: int = 5) -> torch.Tensor:
        """(k, C, H, W): each path on its own."""
        return self._cached(("path_relevance", k), lambda: path_relevance(self.explanation, self.paths(k)))

    def union_relevance(self, k: int = 5) -> torch.Tensor:
        """(C, H, W): the union of the k paths."""
        return self._cached(("union_relevance", k), lambda: union_relevance(self.explanation, self.paths(k))[0])

    def path_activation(self, k: int = 5, path: int | None = None) -> torch.Tensor:
        """(H, W) in [0, 1]: the k paths' neurons (or one path's)."""
        def compute():
            paths = self.paths(k)
            return path_activation(self.explanation, paths if path is None else [paths[path]])
        return self._cached(("path_activation", k, path), compute)

    def selection(self, layer: str, alpha: float) -> Selection:
        return self._cached(("selection", layer, alpha), lambda: get_optimizer(self.explanation, layer, alpha))

    def sweep(self, layer: str) -> Sweep:
        """The α sweep at ``layer``; Algorithm 1's selection and heatmap at every swept α are cached with it, so
        that a move of the α slider afterwards is a lookup."""
        *_, sweep = self.sweep_steps(layer)
        return sweep

    def sweep_steps(self, layer: str, chunk: int = SWEEP_CHUNK) -> Iterator[Sweep]:
        """The α sweep at ``layer`` as it grows: a partial sweep (``complete`` False) after each ``chunk`` of α
        values computed, the whole sweep last. Each α's heatmap is cached on its own: a sweep stopped between
        two chunks resumes where it was.

        >>> [len(s.alphas) for s in bundle.sweep_steps("features.28")]  # doctest: +SKIP
        [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
        """
        if ("sweep", layer) in self._cache or getattr(_cache_only, "active", False):
            yield self._cached(("sweep", layer), None)
            return
        alphas = list(DEFAULT_ALPHAS)
        kept = torch.stack([self.selection(layer, alpha).kept for alpha in alphas]).to(self.explanation.inputs.device)
        for start in range(0, len(alphas), chunk):
            todo = []
            with self._lock:
                for i in range(start, min(start + chunk, len(alphas))):
                    if ("masked", layer, alphas[i]) in self._cache:
                        continue
                    same = next((("masked", layer, other) for j, other in enumerate(alphas)
                                 if ("masked", layer, other) in self._cache and torch.equal(kept[i], kept[j])), None)
                    if same is None:
                        todo.append(i)
                    else:  # an α done already keeps the same neurons
                        self._cache[("masked", layer, alphas[i])] = self._cache[same]
                if not todo:
                    continue
                heatmaps = masked_heatmaps(self.explanation, layer, kept[todo]).sum(1)
                for i, heatmap in zip(todo, heatmaps):
                    self._cache[("masked", layer, alphas[i])] = heatmap
            done = start + chunk
            if done < len(alphas):
                yield sweep_of(self.explanation, layer, alphas[:done], kept[:done], torch.stack(
                    [self._cache[("masked", layer, alpha)] for alpha in alphas[:done]]), complete=False)
        yield self._cached(("sweep", layer), lambda: sweep_of(self.explanation, layer, alphas, kept, torch.stack(
            [self._cache[("masked", layer, alpha)] for alpha in alphas])))

    def masked_relevance(self, layer: str, alpha: float) -> torch.Tensor:
        """(H, W): the heatmap of the neurons Algorithm 1 keeps at ``layer`` for ``alpha`` (summed over colour)."""
        kept = self.selection(layer, alpha).kept[None]
        return self._cached(("masked", layer, alpha),
                            lambda: masked_heatmaps(self.explanation, layer, kept)[0].sum(0))

    def neuron_relevance(self, layer: str, index: int) -> torch.Tensor:
        return self._cached(("neuron_relevance", layer, index),
                            lambda: neuron_relevance(self.explanation, layer, [index])[0])

    def deconvolution(self, layer: str, index: int) -> torch.Tensor:
        return self._cached(("deconv", layer, index), lambda: deconvolve(self.explanation, layer, [index])[0])

    def neuron_activation(self, layer: str, index: int) -> torch.Tensor:
        def compute():
            maps = activation_maps(self.explanation, [(layer, index)])
            return maps[0] if len(maps) else torch.zeros(self.explanation.inputs.shape[-2:])
        return self._cached(("neuron_activation", layer, index), compute)
