"""RelevanceHeatmap and ActivationHeatmap: the image with a heatmap over it (bqplot, sent as PNG).

Relevance shows the full explanation, the neurons Algorithm 1 keeps at the α layer, the union of the
k paths, or one path, in a symmetric diverging colormap (zero = the image shows through). Activation
shows the paths' (or one path's, or the selected neuron's) activation maps. Changing the opacity or
what is shown re-renders from cached results; nothing is recomputed.
"""
from __future__ import annotations

import ipywidgets as widgets

from ..analysis.render import activation_overlay, relevance_overlay
from .common import PictureFigure, View


def _path_options(k: int) -> list[tuple[str, str]]:
    return [(f"path {i + 1}", f"path {i}") for i in range(k)]


class _Heatmap(View):
    def __init__(self, state, title: str, modes: list[tuple[str, str]], size: str):
        self.figure = PictureFigure(title, size)
        self.mode = widgets.Dropdown(options=modes + _path_options(state.k), layout=widgets.Layout(width="150px"))
        self.opacity = widgets.FloatSlider(value=state.opacity, min=0, max=1, step=0.05, description="opacity",
                                           readout=False, layout=widgets.Layout(width="170px"))
        widgets.link((self.opacity, "value"), (state, "opacity"))
        self._modes = modes
        self.mode.observe(lambda change: self.refresh(), "value")
        state.observe(self._new_k, "k")
        controls = widgets.HBox([self.mode, self.opacity])
        super().__init__(state, [self.figure, controls])

    def _new_k(self, change) -> None:
        current = self.mode.value
        self.mode.options = self._modes + _path_options(self.state.k)
        if current in [value for _, value in self.mode.options]:
            self.mode.value = current

    def _paths_ready(self, bundle) -> bool:
        return bundle.has_paths(self.state.k) and self.state.paths_revision > 0


class RelevanceHeatmap(_Heatmap):
    observes = ("bundle", "alpha", "layer", "opacity", "paths_revision", "sweep_ready", "heatmap_mode")

    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "relevance", [("full explanation", "full"), ("selection (α)", "selection"),
                                              ("k paths", "paths")], size)
        self.mode.value = state.heatmap_mode
        widgets.link((state, "heatmap_mode"), (self.mode, "value"))
        self.refresh()

    def relevance(self):
        """The relevance map now shown, (H, W) or (C, H, W), or None while it is being computed."""
        state, bundle = self.state, self.state.bundle
        mode = state.heatmap_mode
        if mode == "selection" and state.layer in bundle.explanation.relevances:
            return bundle.masked_relevance(state.layer, state.alpha)
        if mode == "paths" and self._paths_ready(bundle):
            return bundle.union_relevance(state.k)
        if mode.startswith("path ") and self._paths_ready(bundle):
            return bundle.path_relevance(state.k)[int(mode.split()[1])]
        return bundle.input_relevance

    def refresh(self) -> None:
        bundle = self.state.bundle
        if bundle is None:
            return
        name = dict((v, k) for k, v in self.mode.options).get(self.state.heatmap_mode, self.state.heatmap_mode)
        extra = f" at {self.state.layer}, α = {self.state.alpha:g}" if self.state.heatmap_mode == "selection" else ""
        self.figure.title = f"relevance: {name}{extra}"
        self.figure.show(relevance_overlay(bundle.picture, self.relevance(), self.state.opacity))


class ActivationHeatmap(_Heatmap):
    observes = ("bundle", "opacity", "paths_revision", "selected")

    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "activation", [("k paths", "paths"), ("selected neuron", "neuron")], size)
        self.refresh()

    def activation(self):
        state, bundle = self.state, self.state.bundle
        mode = self.mode.value
        if mode == "neuron" and state.selected:
            return bundle.neuron_activation(*state.selected)
        if not self._paths_ready(bundle):
            return None
        if mode.startswith("path "):
            return bundle.path_activation(state.k, int(mode.split()[1]))
        return bundle.path_activation(state.k)

    def refresh(self) -> None:
        bundle = self.state.bundle
        if bundle is None:
            return
        activation = self.activation()
        self.figure.title = f"activation: {self.mode.label}" + ("" if activation is not None else " (computing…)")
        self.figure.show(bundle.picture if activation is None else
                         activation_overlay(bundle.picture, activation, self.state.opacity))
