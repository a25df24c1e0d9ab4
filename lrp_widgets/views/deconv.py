"""DeconvPanel: for the selected neuron, its deconvnet reconstruction and its neuron-conditioned
relevance heatmap, with the neuron's identity and relevance."""
from __future__ import annotations

import ipywidgets as widgets
from ..analysis.graph import channel_relevance
from ..analysis.render import deconvolution_rgb, relevance_overlay
from .common import BLANK, PictureFigure, View


class DeconvPanel(View):
    observes = ("bundle", "selected", "opacity")

    def __init__(self, state, size: str = "220px"):
        self.label = widgets.HTML("click a neuron in the graph")
        self.deconvolution = PictureFigure("deconvolution", size)
        self.relevance = PictureFigure("neuron relevance", size)
        super().__init__(state, [self.label, widgets.HBox([self.deconvolution, self.relevance])])
        self.refresh()

    def refresh(self) -> None:
        bundle, selected = self.state.bundle, self.state.selected
        if bundle is None or not selected:
            self.label.value = "click a neuron in the graph to see its deconvolution"
            if bundle is not None:
                self.deconvolution.show(BLANK)
                self.relevance.show(BLANK)
            return
        layer, index = selected
        relevance = float(channel_relevance(bundle.explanation, layer)[index])
        self.label.value = f"selected: <b>{layer}</b> neuron <b>{index}</b>, relevance {relevance:.4g}"
        self.deconvolution.show(deconvolution_rgb(bundle.deconvolution(layer, index)))
        self.relevance.show(relevance_overlay(bundle.picture, bundle.neuron_relevance(layer, index), self.state.opacity))
