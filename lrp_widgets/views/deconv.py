"""DeconvPanel: for the selected neuron, its deconvnet reconstruction and its neuron-conditioned
relevance heatmap, with the neuron's identity and relevance."""
from __future__ import annotations

import ipywidgets as widgets

from ..analysis.render import deconvolution_rgb, relevance_overlay
from .common import DECONVOLUTION_BAR, RELEVANCE_BAR, PictureFigure, View, about, colour_bar, how_to_read


class DeconvPanel(View):
    observes = ("result", "opacity")

    def __init__(self, state, size: str = "220px"):
        self.label = widgets.HTML("click a neuron in the graph to see its deconvolution")
        self.deconvolution = PictureFigure("deconvolution", size)
        self.relevance = PictureFigure("neuron relevance", size)
        explained = [widgets.VBox([self.deconvolution, colour_bar(*DECONVOLUTION_BAR, width=size),
                                   how_to_read("The image pattern this neuron responds to (deconvnet).", size)]),
                     widgets.VBox([self.relevance, colour_bar(*RELEVANCE_BAR, width=size),
                                   how_to_read("The pixels whose evidence for the class passes through this neuron.",
                                               size)])]
        super().__init__(state, [self.label, widgets.HBox(explained)])
        self.refresh()

    def fresh(self) -> bool:
        result = self.state.result
        return self.current() and (result is None or (result.neuron.complete if result.neuron is not None
                                                      else not result.request.selected))

    def render(self) -> None:
        result = self.state.result
        if result is None:
            return
        neuron = result.neuron
        if neuron is None:
            self.label.value = ("computing the selected neuron…" if result.request.selected else
                                "click a neuron in the graph to see its deconvolution")
            if self.changed("pictures", None):
                self.deconvolution.show(None)
                self.relevance.show(None)
            return
        self.label.value = (f"selected: <b>{neuron.layer}</b> ({result.bundle.layer_name(neuron.layer)}) neuron "
                            f"<b>{neuron.index}</b>, relevance "
                            f"{neuron.relevance:.4g} for {about(result)}"
                            + ("" if neuron.complete else " <i>(computing its relevance…)</i>")
                            + (f'<br><span class="lrp-no-deconvolution">no deconvolution: {neuron.why}</span>'
                               if neuron.why else ""))
        if self.changed("pictures", neuron, self.state.opacity):
            self.deconvolution.show(None if neuron.deconvolution is None else deconvolution_rgb(neuron.deconvolution))
            self.relevance.show(None if neuron.heatmap is None else
                                relevance_overlay(result.bundle.grey_picture, neuron.heatmap, self.state.opacity))
