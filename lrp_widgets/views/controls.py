"""ClassSelector (top-5 bar chart; choosing a class re-explains for it), ImagePicker (examples and
upload) and StatusBar (the model's untrained-weights banner, progress, errors)."""
from __future__ import annotations

from dataclasses import replace
from html import escape

import bqplot
import ipywidgets as widgets

from ..engine.images import MAX_BYTES, open_image
from ..engine.models import UNTRAINED_MESSAGE
from ..errors import LRPWidgetsError
from ..examples import EXAMPLES, load_example
from .common import View, short


def _percent(probability: float) -> str:
    """Three significant digits: bars of nearly equal probability still read differently."""
    return f"{100 * probability:.3g}%"


class ClassSelector(View):
    """The top-5 classes of the result on screen; the highlighted bar and the dropdown always show the
    current request's class (``state.target``, or the top-1 for None)."""

    observes = ("result", "target")

    def __init__(self, state):
        # horizontal bars; the class names are a mark of their own, left of the bars, so a click on a name chooses
        # its class too (a class of tiny probability has a bar too thin to hit)
        x, y = bqplot.OrdinalScale(reverse=True), bqplot.LinearScale(min=0, allow_padding=False)
        self.bars = bqplot.Bars(x=[], y=[], scales={"x": x, "y": y}, colors=["#4c72b0"], orientation="horizontal",
                                interactions={"click": "select"}, selected_style={"fill": "#d62728"},
                                tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["class", "probability"],
                                                       formats=["", ".3%"]))
        self.names = bqplot.Label(x=[], y=[], text=[], scales={"x": y, "y": x}, align="end", x_offset=-6, y_offset=4,
                                  default_size=12, font_weight="normal", colors=["#333"], apply_clip=False, interactions={"click": "select"},
                                  selected_style={"fill": "#d62728", "font-weight": "bold"})
        for mark in (self.bars, self.names):
            mark.observe(self._bar_clicked, "selected")
        # "~" drops trailing zeros: 0.05%, 0.1%, 0.15% … or 10%, 20% … stay distinct at any scale; the margins
        # hold the widest tick ("0.01234%") and the axis label whole
        axes = [bqplot.Axis(scale=x, orientation="vertical", visible=False),
                bqplot.Axis(scale=y, label="probability", tick_format=".4~%", num_ticks=3, label_offset="32px",
                            tick_style={"font-size": "11px"})]
        self.chart = bqplot.Figure(marks=[self.bars, self.names], axes=axes, title="top-5 classes: click to explain",
                                   title_style={"font-size": "13px"}, display_toolbar=False,
                                   fig_margin={"top": 30, "bottom": 52, "left": 190, "right": 40},
                                   layout=widgets.Layout(width="370px", height="210px"))
        self.choice = widgets.Dropdown(description="explain", layout=widgets.Layout(width="330px"))
        self.choice.observe(self._chosen, "value")
        self._indices: list[int] = []
        super().__init__(state, [self.chart, self.choice])
        self.refresh()

    @property
    def current_class(self) -> int | None:
        """The class of the current request."""
        state = self.state
        if state.target is not None:
            return state.target
        return state.result.target if state.result is not None else None

    def fresh(self) -> bool:
        """The chart shows the image's and model's top classes: another class is no change."""
        result, request = self.state.result, self.state.request
        return result is None or request is None or replace(result.request, target=None) == replace(request, target=None)

    def render(self) -> None:
        result, current = self.state.result, self.current_class
        if result is None:
            return
        predictions = result.bundle.predictions
        with self.quietly():
            if self.changed("bars", result.bundle):
                self._indices = [p["index"] for p in predictions]
                names = [f"{short(p['name'], 22)} ({p['index']})" for p in predictions]
                with self.bars.hold_sync(), self.names.hold_sync():
                    self.bars.x = self.names.y = self.names.text = names
                    self.bars.y = [p["probability"] for p in predictions]
                    self.names.x = [0] * len(names)
            options = [(f"{p['name']} ({p['index']}) {_percent(p['probability'])}", p["index"]) for p in predictions]
            if current not in self._indices:
                options.append((f"{result.bundle.model.category(current)} ({current})", current))
            if list(self.choice.options) != options:
                self.choice.options = options
            self.choice.value = current
            self.bars.selected = self.names.selected = (
                [self._indices.index(current)] if current in self._indices else None)

    def _bar_clicked(self, change) -> None:
        if self.syncing:
            return
        selected = change["new"]
        if selected is None or len(selected) == 0:  # a click on the highlighted bar: keep it highlighted
            self.refresh()
            return
        self.state.target = self._indices[int(selected[0])]

    def _chosen(self, change) -> None:
        if change["new"] is not None and not self.syncing:
            self.state.target = change["new"]


class ImagePicker(View):
    """The examples and an upload; shows which image is explained (``state.image_name``)."""

    observes = ("image_name",)

    def __init__(self, state, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.examples = widgets.ToggleButtons(options=list(EXAMPLES), value=None, description="example",
                                              style={"button_width": "70px"})
        self.examples.observe(self._example, "value")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload")
        self.upload.observe(self._uploaded, "value")
        self.name = widgets.HTML()
        self.name.add_class("lrp-image-name")
        self._upload = ()  # the uploaded file on screen, without its bytes: the button's counter says "(1)"
        super().__init__(state, [widgets.HBox([self.examples, self.upload, self.name])])
        self.refresh()

    def _example(self, change) -> None:
        if change["new"] and not self.syncing:
            self.load(lambda: load_example(change["new"]), change["new"])

    def _uploaded(self, change) -> None:
        if change["new"] and not self.syncing:
            item = change["new"][0]
            self.load(lambda: open_image(bytes(item["content"]), self.max_bytes, name=item["name"]), item["name"],
                      ({**item, "content": b""},))

    def load(self, read, name: str, upload: tuple = ()) -> None:
        """Read an image (``upload``: the uploaded file it comes from, without its bytes); on failure say why and
        keep the current one."""
        try:
            image = read()
        except LRPWidgetsError as error:
            self.state.error = str(error)
            self.refresh()  # an example button pressed for a file that failed goes back to the image shown
            return
        self._upload = upload
        with self.state.hold_trait_notifications():
            self.state.image_name = name
            self.state.image = image
        self.refresh()  # the same name again changes no trait

    def render(self) -> None:
        name = self.state.image_name
        with self.quietly():
            self.examples.value = name if name in EXAMPLES else None
            # the upload's bytes leave the widget (a resync would send them back); choosing the file again still
            # counts as a change
            self.upload.value = self._upload
        self.name.value = f"image: <b>{escape(name)}</b>" if name else ""


class StatusBar(View):
    """The untrained-weights banner of the model on screen, what is being computed, and what went wrong."""

    observes = ("result", "pretrained", "busy", "status", "error")

    def __init__(self, state):
        self.banner = widgets.HTML()
        self.progress = widgets.HTML()
        self.message = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        # one line's height whatever is being computed (nothing below it moves); an error grows it, whole
        self.line = widgets.HBox([self.progress, self.message], layout=widgets.Layout(height="26px", overflow="hidden"))
        super().__init__(state, [self.banner, self.line])
        self.refresh()

    def render(self) -> None:
        state = self.state
        model = state.result.bundle.model.name if state.result is not None else state.model_name
        self.banner.value = ("" if state.pretrained else
                             f'<div class="lrp-untrained" style="background:#fff3cd;padding:4px 8px;'
                             f'border:1px solid #e0c36c">⚠ {escape(model)}: {UNTRAINED_MESSAGE}</div>')
        self.progress.value = (f'<span class="lrp-busy">{f"working: {escape(state.status)}" if state.status else "working…"}'
                               '</span>' if state.busy else "")
        vanishing = state.result.bundle.vanishing if state.result is not None else None
        self.line.layout.height, self.line.layout.overflow = (
            ("auto", "visible") if state.error or vanishing else ("26px", "hidden"))
        self.message.value = "".join(
            f'<div class="{kind}" style="color:{colour};padding:2px 8px;white-space:normal;line-height:18px">'
            f'⚠ {escape(text)}</div>'
            for kind, colour, text in (("lrp-error", "#a00", state.error), ("lrp-vanishing", "#8a5a00", vanishing))
            if text)
