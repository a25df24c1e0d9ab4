"""RelevanceHeatmap and ActivationHeatmap: the image with a heatmap over it (bqplot, sent as PNG).

Relevance shows the full explanation, the neurons Algorithm 1 keeps at the α layer, the union of the
k paths, or one path, in a symmetric diverging colormap (zero = the image shows through). Activation
shows the paths' (or one path's, or the selected neuron's) activation maps. Both render the session's
published result; changing the opacity or what is shown recomputes nothing.
"""
from __future__ import annotations

from html import escape

import ipywidgets as widgets

from ..analysis.render import activation_overlay, relevance_overlay
from .common import PictureFigure, View


def _path_options(k: int) -> list[tuple[str, str]]:
    return [(f"path {i + 1}", f"path {i}") for i in range(k)]


class _Heatmap(View):
    def __init__(self, state, title: str, modes: list[tuple[str, str]], size: str):
        self.figure = PictureFigure(title, size)
        self.caption = widgets.HTML(layout=widgets.Layout(width=size))
        self.caption.add_class("lrp-caption")
        self.mode = widgets.Dropdown(options=modes + _path_options(state.k), layout=widgets.Layout(width="150px"))
        self.opacity = widgets.FloatSlider(value=state.opacity, min=0, max=1, step=0.05, description="opacity",
                                           readout=False, layout=widgets.Layout(width="170px"))
        widgets.link((self.opacity, "value"), (state, "opacity"))
        self._modes = modes
        self.mode.observe(lambda change: self.refresh(), "value")
        controls = widgets.HBox([self.mode, self.opacity])
        super().__init__(state, [self.figure, self.caption, controls])

    def _sync_path_options(self, k: int) -> None:
        options = self._modes + _path_options(k)
        if list(self.mode.options) != options:
            current = self.mode.value
            self.mode.options = options
            if current in [value for _, value in options]:
                self.mode.value = current

    def _draw(self, picture, overlay, data, title: str, caption: str) -> None:
        """Show ``overlay(picture, data, opacity)`` (the picture alone for None) unless it is already shown."""
        self.figure.title = title
        self.caption.value = caption
        if self.changed("figure", picture, data, self.state.opacity):
            self.figure.show(picture if data is None else overlay(picture, data, self.state.opacity))


class RelevanceHeatmap(_Heatmap):
    observes = ("result", "opacity", "heatmap_mode")

    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "relevance", [("full explanation", "full"), ("selection (α)", "selection"),
                                              ("k paths", "paths")], size)
        self.mode.value = state.heatmap_mode
        widgets.link((state, "heatmap_mode"), (self.mode, "value"))
        self.refresh()

    def relevance(self):
        """The relevance map shown, its description, and whether it stands in for one being computed."""
        result, mode = self.state.result, self.state.heatmap_mode
        if mode == "selection" and result.masked_relevance is not None:
            return result.masked_relevance, f"kept by α = {result.request.alpha:g} at {result.layer}", False
        if mode == "paths" and result.paths is not None:
            return result.union_relevance, f"the {len(result.paths)} best paths", False
        if mode.startswith("path ") and result.paths is not None and int(mode.split()[1]) < len(result.paths):
            return result.path_relevance[int(mode.split()[1])], f"path {int(mode.split()[1]) + 1}", False
        return result.bundle.input_relevance, "full explanation", mode != "full"

    def refresh(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._sync_path_options(result.request.k)
        data, what, standing_in = self.relevance()
        name = dict((v, k) for k, v in self.mode.options).get(self.state.heatmap_mode, self.state.heatmap_mode)
        self._draw(result.bundle.picture, relevance_overlay, data, f"relevance: {name}",
                   f"class <b>{escape(result.class_name)}</b>: {what}"
                   + (" <i>(computing the selection…)</i>" if standing_in else ""))


class ActivationHeatmap(_Heatmap):
    observes = ("result", "opacity")

    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "activation", [("k paths", "paths"), ("selected neuron", "neuron")], size)
        self.refresh()

    def activation(self):
        """The activation map shown (None while it is computed) and its description."""
        result, mode = self.state.result, self.mode.value
        if mode == "neuron":
            neuron = result.neuron
            return (None, "no neuron selected") if neuron is None else (
                neuron.activation, f"neuron {neuron.index} of {neuron.layer}")
        if result.path_activation is None:
            return None, "computing the paths…"
        if mode.startswith("path "):
            index = int(mode.split()[1])
            return (result.path_activation[1 + index], f"path {index + 1}") if index < len(result.paths) else (
                None, "no such path")
        return result.path_activation[0], f"the {len(result.paths)} best paths"

    def refresh(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._sync_path_options(result.request.k)
        data, what = self.activation()
        self._draw(result.bundle.picture, activation_overlay, data, f"activation: {self.mode.label}",
                   f"class <b>{escape(result.class_name)}</b>: {what}")
