"""RelevanceHeatmap and ActivationHeatmap: the image with a heatmap over it (bqplot, sent as PNG).

Relevance shows the full explanation, the neurons Algorithm 1 keeps at the α layer, the union of the
k paths, or one path, in a symmetric diverging colormap (zero = the image shows through). Activation
shows the paths' (or one path's, or the selected neuron's) activation maps. Both render the session's
published result, with a colour bar and a line on how to read them; changing a view's opacity or what
it shows recomputes nothing.
"""
from __future__ import annotations

import ipywidgets as widgets

from ..analysis.render import activation_overlay, relevance_overlay
from .common import ACTIVATION_BAR, RELEVANCE_BAR, PictureFigure, View, about, colour_bar, how_to_read, paths_shown


def _path_options(k: int) -> list[tuple[str, str]]:
    return [(f"path {i + 1}", f"path {i}") for i in range(k)]


class _Heatmap(View):
    """A picture with its caption, colour bar, a line on how to read it, what to show and its own opacity."""

    observes = ("result",)

    def __init__(self, state, title: str, modes: list[tuple[str, str]], size: str, bar: tuple, how: str,
                 opacity: float):
        self.figure = PictureFigure(title, size)
        self.caption = widgets.HTML(layout=widgets.Layout(width=size, height="50px", overflow="hidden"))  # 3 lines: nothing moves
        self.caption.add_class("lrp-caption")
        self.mode = widgets.Dropdown(options=modes + _path_options(state.k), layout=widgets.Layout(width=size))
        self.opacity = widgets.FloatSlider(value=opacity, min=0, max=1, step=0.05, description="opacity",
                                           readout=True, readout_format=".2f", layout=widgets.Layout(width=size))
        self._modes = modes
        self.mode.observe(lambda change: self.refresh(), "value")
        self.opacity.observe(lambda change: self.refresh(), "value")
        super().__init__(state, [self.figure, self.caption, colour_bar(*bar, width=size), how_to_read(how, size),
                                 self.mode, self.opacity])

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
        self.caption.value = f'<div style="font-size:13px;line-height:16px">{caption}</div>'
        if self.changed("figure", picture, data, self.opacity.value):
            self.figure.show(picture if data is None else overlay(picture, data, self.opacity.value))


class RelevanceHeatmap(_Heatmap):
    observes = ("result", "heatmap_mode")

    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "relevance", [("full explanation", "full"), ("selection (α)", "selection"),
                                              ("k paths", "paths")], size, RELEVANCE_BAR,
                         "Red pixels made the network say this class, blue ones spoke against it (over a grey copy of "
                         "the image).", state.opacity)
        self.mode.value = state.heatmap_mode
        widgets.link((state, "heatmap_mode"), (self.mode, "value"))
        widgets.link((state, "opacity"), (self.opacity, "value"))  # the neuron's relevance in the deconv panel too
        self.refresh()

    def relevance(self):
        """The relevance map shown, its description, and whether it stands in for one being computed."""
        result, mode = self.state.result, self.state.heatmap_mode
        if mode == "selection" and result.masked_relevance is not None:
            return (result.masked_relevance, f"the neurons α = {result.request.alpha:g} keeps at "
                    f"{result.bundle.layer_name(result.layer)}", False)
        if mode == "paths" and result.paths is not None:
            return result.union_relevance, paths_shown(result), False
        index = int(mode.split()[1]) if mode.startswith("path ") else None
        if index is not None and result.paths is not None and index < len(result.paths):
            return result.path_relevance[index], f"path {index + 1}", False
        waiting = result.masked_relevance is None if mode == "selection" else mode != "full" and result.paths is None
        return result.bundle.input_relevance, "full explanation", waiting

    def fresh(self) -> bool:
        return self.state.result is None or (self.current() and not self.relevance()[2])

    def render(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._sync_path_options(result.request.k)
        data, what, standing_in = self.relevance()
        name = dict((v, k) for k, v in self.mode.options).get(self.state.heatmap_mode, self.state.heatmap_mode)
        self._draw(result.bundle.grey_picture, relevance_overlay, data, f"relevance: {name}",
                   f"{about(result)}: {what}" + (" <i>(computing the selection…)</i>" if standing_in else ""))


class ActivationHeatmap(_Heatmap):
    def __init__(self, state, size: str = "260px"):
        super().__init__(state, "activation", [("k paths", "paths"), ("selected neuron", "neuron")], size,
                         ACTIVATION_BAR, "Where the neurons of the paths (or the selected one) fire, whatever the "
                         "class.", 0.7)
        self.refresh()

    def activation(self):
        """The activation map shown (None for none), its description, and whether it is being computed."""
        result, mode = self.state.result, self.mode.value
        if mode == "neuron":
            neuron = result.neuron
            if neuron is None or neuron.activation is None:
                return (None, "computing the selected neuron…", True) if result.request.selected else (
                    None, "no neuron selected", False)
            return neuron.activation, f"neuron {neuron.index} of {result.bundle.layer_name(neuron.layer)}", False
        if result.path_activation is None:
            return None, "computing the paths…", True
        if mode.startswith("path "):
            index = int(mode.split()[1])
            return (result.path_activation[1 + index], f"path {index + 1}", False) if index < len(result.paths) else (
                None, "no such path", False)
        return result.path_activation[0], paths_shown(result), False

    def fresh(self) -> bool:
        return self.state.result is None or (self.current() and not self.activation()[2])

    def render(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._sync_path_options(result.request.k)
        data, what, _ = self.activation()
        self._draw(result.bundle.picture, activation_overlay, data, f"activation: {self.mode.label}",
                   f"{about(result)}: {what}")
