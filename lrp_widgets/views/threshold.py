"""ThresholdSlider: α (Algorithm 1's threshold), the layer it applies to and k, with the MSE/SMAPE
readout; ``sweep_view``: the sweep curves (bqplot) on their own axes, the optimal α marked and
explained, a click on a point sets α."""
from __future__ import annotations

import bqplot
import ipywidgets as widgets

from ..analysis.threshold import DEFAULT_ALPHAS
from .common import View, about, dim, how_to_read, layer_label, stale_note

MSE_COLOUR, SMAPE_COLOUR, OPTIMUM_COLOUR = "#d62728", "#1f77b4", "#2ca02c"
OPTIMAL_RULE = "the fewest kept neurons whose MSE is at most the mean MSE of the sweep"
#: the tutorial's section on α (Algorithm 1, the MSE/SMAPE sweep, the optimal α), beside the app's notebook: Voila
#: (tree mode, e.g. Binder) and JupyterLab open it; its anchor is the id they give the section's heading
ALPHA_TUTORIAL = "tutorial.ipynb#7-Algorithm-1-and-its-threshold"
#: what α does, in two sentences on screen; their title links to the tutorial's section (no extra line)
ALPHA_MEANING = (f'<a class="lrp-alpha-link" href="{ALPHA_TUTORIAL}" target="_blank" rel="noopener" '
                 'title="the tutorial\'s section on α" style="color:#1a5fb4;text-decoration:underline">'
                 "<b>What is α?</b></a> Algorithm 1 scores each neuron of the chosen layer by its activation minus its "
                 "relevance (each scaled by the layer's largest, summed over its map) and keeps those scoring above "
                 "μ − α·σ, the layer's mean and spread of scores. A larger α keeps more neurons; a small one keeps "
                 "only neurons far more active than relevant, so at α = −2 even highly relevant neurons are faded.")


class ThresholdSlider(View):
    observes = ("result",)

    def __init__(self, state):
        self.alpha = widgets.FloatSlider(value=state.alpha, min=DEFAULT_ALPHAS[0], max=DEFAULT_ALPHAS[-1], step=0.25,
                                         description="α", continuous_update=True, readout_format=".2f",
                                         layout=widgets.Layout(width="350px"))
        self.layer = widgets.Dropdown(description="layer", layout=widgets.Layout(width="250px"))
        self.k = widgets.BoundedIntText(value=state.k, min=1, max=20, description="k paths",
                                        layout=widgets.Layout(width="110px"), style={"description_width": "50px"})
        widgets.link((self.alpha, "value"), (state, "alpha"))
        widgets.link((self.k, "value"), (state, "k"))
        self.layer.observe(self._layer_chosen, "value")
        state.observe(self._show_layer, "layer")
        self.readout = widgets.HTML(layout=widgets.Layout(height="70px", overflow="hidden"))  # 4 lines
        # α runs over the whole swept range, so the marker stays visible at its ends; MSE and SMAPE each have
        # their own axis and unit
        x = bqplot.LinearScale(min=DEFAULT_ALPHAS[0] - 0.1, max=DEFAULT_ALPHAS[-1] + 0.1, allow_padding=False)
        mse, smape = bqplot.LinearScale(min=0, allow_padding=False), bqplot.LinearScale(min=0, allow_padding=False)
        self.mse = bqplot.Lines(x=[], y=[], scales={"x": x, "y": mse}, colors=[MSE_COLOUR], marker="circle",
                                marker_size=16)
        self.smape = bqplot.Lines(x=[], y=[], scales={"x": x, "y": smape}, colors=[SMAPE_COLOUR],
                                  line_style="dash_dotted")
        self.points = bqplot.Scatter(x=[], y=[], scales={"x": x, "y": mse}, colors=[MSE_COLOUR], default_size=60,
                                     interactions={"click": "select"}, tooltip=bqplot.Tooltip(
                                         fields=["x", "y"], labels=["α", "MSE"], formats=[".2f", ".3g"]))
        self.points.on_element_click(self._point_clicked)
        self.marker = bqplot.Lines(x=[state.alpha, state.alpha], y=[0, 1], scales={"x": x, "y": bqplot.LinearScale(
            min=0, max=1)}, colors=["black"], stroke_width=2)
        self.optimum = bqplot.Lines(x=[], y=[0, 1], scales={"x": x, "y": bqplot.LinearScale(min=0, max=1)},
                                    colors=[OPTIMUM_COLOUR], line_style="dashed", stroke_width=2)
        axes = [bqplot.Axis(scale=x, label="α (Algorithm 1's threshold)", tick_style={"font-size": "11px"}),
                bqplot.Axis(scale=mse, orientation="vertical", label="MSE", color=MSE_COLOUR, tick_format=".2g",
                            label_color=MSE_COLOUR, label_offset="42px", num_ticks=5, tick_style={"font-size": "11px"}),
                bqplot.Axis(scale=smape, orientation="vertical", side="right", label="SMAPE", color=SMAPE_COLOUR,
                            label_color=SMAPE_COLOUR, tick_format=".2g", label_offset="42px", num_ticks=5, tick_style={"font-size": "11px"})]
        self.plot = bqplot.Figure(marks=[self.smape, self.mse, self.points, self.marker, self.optimum], axes=axes,
                                  title="threshold sweep: click a point to set α", title_style={"font-size": "13px"},
                                  display_toolbar=False, fig_margin={"top": 30, "bottom": 42, "left": 55, "right": 55},
                                  layout=widgets.Layout(width="420px", height="250px"))
        self.key = how_to_read(
            f'<span style="color:{MSE_COLOUR}">━ MSE</span> and <span style="color:{SMAPE_COLOUR}">┅ SMAPE</span> '
            f"between the kept neurons' heatmap and the full one (lower = closer); <b>━</b> your α; "
            f'<span style="color:{OPTIMUM_COLOUR}">┅ optimal α</span>: {OPTIMAL_RULE}.', "420px")
        self.meaning = how_to_read(ALPHA_MEANING, "350px")
        self.meaning.add_class("lrp-alpha-meaning")
        controls = widgets.VBox([self.alpha, widgets.HBox([self.k, self.layer]), self.readout, self.meaning],
                                layout=widgets.Layout(width="360px"))
        super().__init__(state, [controls])
        self.sweep_note = stale_note()
        self.sweep_caption = widgets.HTML(layout=widgets.Layout(width="420px", height="18px", overflow="hidden"))
        self.sweep_caption.add_class("lrp-sweep-caption")
        self.sweep_view = widgets.VBox([self.sweep_note, self.plot, self.sweep_caption, self.key])
        self.sweep_view.add_class("lrp-sweep")
        self.sweep_view.add_class("lrp-view")
        self.refresh()

    def _point_clicked(self, mark, event) -> None:
        index = event["data"]["index"]
        self.state.alpha = float(self.mse.x[index])

    def _layer_chosen(self, change) -> None:
        if change["new"] and not self.syncing:
            self.state.layer = change["new"]

    def _show_layer(self, change=None) -> None:
        """The dropdown shows the current request's layer (among the explained model's layers)."""
        with self.quietly():
            bundle = self.state.result.bundle if self.state.result is not None else None
            layers = bundle.conv_layers if bundle is not None else []
            options = [(layer_label(bundle, layer), layer) for layer in layers]
            if list(self.layer.options) != options:
                self.layer.options = options
            self.layer.value = self.state.layer if self.state.layer in layers else None

    def fresh(self) -> bool:
        return self.current("selection")

    def mark_stale(self) -> None:
        super().mark_stale()
        dim(self.sweep_view, self.sweep_note, not self.current("sweep"), self.state)

    def render(self) -> None:
        result = self.state.result
        if result is None:
            return
        self._show_layer()
        self.marker.x = [result.request.alpha, result.request.alpha]
        selection, sweep = result.selection, result.sweep
        if selection is None:
            self._say(f"<i>Algorithm 1 at {result.bundle.layer_name(result.layer)}…</i>")
            return
        kept = int(selection.kept.sum())
        text = (f"keeps <b>{kept}</b>/{selection.kept.numel()} neurons of {result.bundle.layer_name(result.layer)} for "
                f"{about(result)} (score &gt; μ − α·σ = {selection.threshold:.3g})")
        if sweep is None:
            self._say(f"{text}<br><i>computing the sweep…</i>")
            return
        progress = "" if sweep.complete else f" (computing: {len(sweep.alphas)} of {len(DEFAULT_ALPHAS)} α so far…)"
        if self.changed("curves", sweep):
            self.sweep_caption.value = (f'<div style="font-size:12px">{about(result)} · α at '
                                        f'{result.bundle.layer_name(result.layer)}{progress}</div>')
            with self.plot.hold_sync():
                self.mse.x = self.smape.x = self.points.x = sweep.alphas
                self.mse.y = self.points.y = sweep.mse
                self.smape.y = sweep.smape
                self.optimum.x = [sweep.optimal_alpha, sweep.optimal_alpha] if sweep.complete else []
        if not sweep.complete:
            self._say(f"{text}<br><i>computing the sweep: {len(sweep.alphas)} of {len(DEFAULT_ALPHAS)} α…</i>")
            return
        if result.bundle.vanishing:
            self._say(f"{text}<br>no sweep to read: the relevance vanishes")
            return
        at = sweep.at(result.request.alpha)
        self._say(f"{text}<br>MSE {at['mse']:.3g} · SMAPE {at['smape']:.3g} · optimal α = <b>{sweep.optimal_alpha:g}</b>")

    def _say(self, html: str) -> None:
        self.readout.value = f'<div style="font-size:13px;line-height:17px">{html}</div>'
