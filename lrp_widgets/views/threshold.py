"""ThresholdSlider: α (Algorithm 1's threshold), the layer it applies to and k, with the MSE/SMAPE
readout and the sweep curves (bqplot), the optimal α marked."""
from __future__ import annotations

from html import escape

import bqplot
import ipywidgets as widgets

from ..analysis.threshold import DEFAULT_ALPHAS
from .common import View


class ThresholdSlider(View):
    observes = ("result",)

    def __init__(self, state):
        self.alpha = widgets.FloatSlider(value=state.alpha, min=DEFAULT_ALPHAS[0], max=DEFAULT_ALPHAS[-1], step=0.25,
                                         description="α", continuous_update=True,
                                         layout=widgets.Layout(width="260px"))
        self.layer = widgets.Dropdown(description="layer", layout=widgets.Layout(width="190px"))
        self.k = widgets.BoundedIntText(value=state.k, min=1, max=20, description="k paths",
                                        layout=widgets.Layout(width="160px"))
        widgets.link((self.alpha, "value"), (state, "alpha"))
        widgets.link((self.k, "value"), (state, "k"))
        self._syncing = False
        self.layer.observe(self._layer_chosen, "value")
        state.observe(self._show_layer, "layer")
        self.readout = widgets.HTML()
        x, y = bqplot.LinearScale(), bqplot.LinearScale()
        self.curves = bqplot.Lines(x=[], y=[[], []], scales={"x": x, "y": y}, colors=["#d62728", "#1f77b4"],
                                   labels=["MSE", "SMAPE / 2"], display_legend=True)
        self.marker = bqplot.Lines(x=[state.alpha, state.alpha], y=[0, 1], scales={"x": x, "y": y}, colors=["black"])
        self.optimum = bqplot.Lines(x=[], y=[0, 1], scales={"x": x, "y": y}, colors=["#2ca02c"], line_style="dashed")
        axes = [bqplot.Axis(scale=x, label="α"), bqplot.Axis(scale=y, orientation="vertical", tick_format=".2f")]
        self.plot = bqplot.Figure(marks=[self.curves, self.marker, self.optimum], axes=axes, title="threshold sweep",
                                  legend_location="top-right", title_style={"font-size": "12px"},
                                  fig_margin={"top": 30, "bottom": 35, "left": 45, "right": 10},
                                  layout=widgets.Layout(width="330px", height="220px"))
        controls = widgets.VBox([widgets.HBox([self.alpha, self.k]), self.layer, self.readout],
                                layout=widgets.Layout(width="440px"))
        super().__init__(state, [widgets.HBox([controls, self.plot])])
        self.refresh()

    def _layer_chosen(self, change) -> None:
        if change["new"] and not self._syncing:
            self.state.layer = change["new"]

    def _show_layer(self, change=None) -> None:
        """The dropdown shows the current request's layer (among the explained model's layers)."""
        self._syncing = True
        try:
            layers = self.state.result.bundle.conv_layers if self.state.result is not None else []
            if list(self.layer.options) != layers:
                self.layer.options = layers
            self.layer.value = self.state.layer if self.state.layer in layers else None
        finally:
            self._syncing = False

    def refresh(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._show_layer()
        self.marker.x = [result.request.alpha, result.request.alpha]
        selection, sweep = result.selection, result.sweep
        if selection is None:
            self.readout.value = f"<i>Algorithm 1 at {result.layer}…</i>"
            return
        kept = int(selection.kept.sum())
        text = (f"keeps <b>{kept}</b>/{selection.kept.numel()} neurons of {result.layer} for class "
                f"{escape(result.class_name)} (score &gt; μ − α·σ = {selection.threshold:.3g})")
        if sweep is None:
            self.readout.value = text + "<br><i>computing the sweep…</i>"
            return
        at = sweep.at(result.request.alpha)
        text += f"<br>MSE {at['mse']:.3g} · SMAPE {at['smape']:.3g} · optimal α = <b>{sweep.optimal_alpha:g}</b>"
        if self.changed("curves", sweep):
            top = max(max(sweep.mse), max(sweep.smape) / 2) or 1.0
            with self.curves.hold_sync():
                self.curves.x = sweep.alphas
                self.curves.y = [sweep.mse, [value / 2 for value in sweep.smape]]
            self.marker.y = self.optimum.y = [0, top]
            self.optimum.x = [sweep.optimal_alpha, sweep.optimal_alpha]
        self.readout.value = text
