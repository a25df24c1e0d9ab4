"""Pieces the views share: a bqplot figure showing one PNG, the View base (rendering the state, dimmed while
stale), captions, colour bars."""
from __future__ import annotations

from contextlib import contextmanager
from html import escape

import bqplot
import ipywidgets as widgets
import numpy as np

from ..analysis.render import png_bytes
from .state import ExplorerState

BLANK = np.full((224, 224, 3), 245, dtype=np.uint8)


class PictureFigure(bqplot.Figure):
    """A square bqplot figure holding one image mark; ``show(array)`` sends it as PNG."""

    def __init__(self, title: str = "", size: str = "260px"):
        scales = {"x": bqplot.LinearScale(min=0, max=1), "y": bqplot.LinearScale(min=0, max=1)}
        # bqplot's image mark redraws when its image widget is replaced, not when the widget's value changes:
        # two widgets take turns (closing a replaced one would race with messages already sent to it)
        self._images = [widgets.Image(value=png_bytes(BLANK), format="png") for _ in range(2)]
        self.mark = bqplot.Image(image=self._images[0], scales=scales, x=[0, 1], y=[0, 1])
        self.blank = True
        super().__init__(marks=[self.mark], title=title, padding_x=0, padding_y=0,
                         fig_margin={"top": 30, "bottom": 4, "left": 4, "right": 4},
                         layout=widgets.Layout(width=size, height=size), title_style={"font-size": "12px"})

    @property
    def png(self) -> bytes:
        return self.mark.image.value

    def show(self, array: np.ndarray | None) -> None:
        """Show an RGB array, or the blank placeholder for None."""
        self.blank = array is None
        spare = self._images[1] if self.mark.image is self._images[0] else self._images[0]
        spare.value = png_bytes(BLANK if array is None else array)
        self.mark.image = spare


#: a view whose picture is not the current request's is dimmed under a note saying what is coming; the note
#: floats over the view (nothing moves) and lets clicks through
STALE_STYLE = ("<style>.lrp-view{position:relative}.lrp-note{position:absolute;top:0;left:0;right:0;z-index:5;"
               "pointer-events:none}.lrp-view:not(.lrp-stale)>.lrp-note{display:none}"
               ".lrp-stale>:not(.lrp-note){opacity:.35;transition:opacity .1s}</style>")


def short(name: str, limit: int = 24) -> str:
    """``name`` cut to ``limit`` characters (an ellipsis says so)."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def describe(request, result=None) -> str:
    """A request's class, image and model in words ("class barn (425) · castle · vgg16"); ``result`` (the one on
    screen) names the class when it is of the same model."""
    if request.target is None:
        what = "its top class"
    elif result is not None and (result.request.model_name, result.request.weights) == (request.model_name,
                                                                                          request.weights):
        what = f"class {result.bundle.model.category(request.target)} ({request.target})"
    else:
        what = f"class {request.target}"
    return f"{what} · {short(request.image_name or 'the image')} · {request.model_name}"


def about(result) -> str:
    """What a result explains, for a caption: "class <b>castle (483)</b> · castle · vgg16"."""
    return (f"class <b>{escape(result.class_name)}</b> · {escape(short(result.request.image_name or 'the image'))} · "
            f"{escape(result.bundle.model.name)}")


def stale_note() -> widgets.HTML:
    """The note a view floats over itself while stale (see :func:`dim`)."""
    note = widgets.HTML(STALE_STYLE)
    note.add_class("lrp-note")
    return note


def paths_shown(result) -> str:
    """The paths a result shows, in words: "the 5 best paths", or why there are none."""
    return f"the {len(result.paths)} best paths" if result.paths else "no paths: the relevance vanishes"


class View(widgets.VBox):
    """A widget rendering one :class:`ExplorerState`: ``render`` runs when a trait in ``observes`` changes, and
    draws only what the state's ``result`` and display choices now call for. A view of results says by ``fresh``
    whether what it shows is the current request's; while not, it is dimmed under "updating for …"."""

    observes: tuple[str, ...] = ()

    def __init__(self, state: ExplorerState, children=(), **kwargs):
        self.note = stale_note()
        super().__init__(children=[self.note, *children], **kwargs)
        self.add_class("lrp-view")
        self.add_class(f"lrp-{type(self).__name__.lower()}")  # lrp-relevanceheatmap, lrp-layergraph …
        self.state = state
        self._drawn: dict[str, tuple] = {}
        self.syncing = False  # True while the view sets its own controls: their observers do nothing
        if self.observes:
            state.observe(lambda change: self.refresh(), list(self.observes))
            state.observe(lambda change: self.mark_stale(), "request")

    def refresh(self) -> None:
        self.render()
        self.mark_stale()

    def render(self) -> None:
        raise NotImplementedError

    def fresh(self) -> bool:
        """Whether what the view shows is the current request's (always, for a view of no result)."""
        return True

    def current(self, *parts: str) -> bool:
        """Whether the result on screen is the current request's and holds ``parts`` (Result fields)."""
        result, request = self.state.result, self.state.request
        return result is None or request is None or (
            result.request == request and all(getattr(result, part) is not None for part in parts))

    def mark_stale(self) -> None:
        dim(self, self.note, not self.fresh(), self.state)

    def changed(self, part: str, *key) -> bool:
        """True (and remembered) when ``part`` is to show something else than it shows: ``key`` holds the
        objects it is drawn from."""
        drawn = self._drawn.get(part)
        if drawn is not None and len(drawn) == len(key) and all(
                a is b or (isinstance(a, (int, float, str, tuple)) and a == b) for a, b in zip(drawn, key)):
            return False
        self._drawn[part] = key
        return True

    @contextmanager
    def quietly(self):
        """Set this view's controls to show the state, without their observers writing it back."""
        self.syncing = True
        try:
            yield
        finally:
            self.syncing = False


def dim(box: widgets.Box, note: widgets.HTML, stale: bool, state: ExplorerState) -> None:
    """Dim ``box`` under ``note`` ("updating for …" the current request) while ``stale``."""
    if stale:
        note.value = (f'{STALE_STYLE}<span style="background:#fff8d6;border:1px solid #e0c36c;border-radius:3px;'
                      f'padding:1px 6px;font-size:12px;display:inline-block;max-width:calc(100% - 16px);'
                      f'white-space:nowrap;overflow:hidden;text-overflow:ellipsis">⟳ updating for '
                      f"{escape(describe(state.request, state.result))}…</span>")
        box.add_class("lrp-stale")
    else:
        box.remove_class("lrp-stale")


#: Colour bars of the views: the CSS gradient and what its left end, middle and right end mean.
RELEVANCE_BAR = ("#0000ff, #ffffff, #ff0000", "against the class", "0", "for the class")
ACTIVATION_BAR = ("#000004, #781c6d, #ed6925, #fcffa4", "inactive", "", "most active")
DECONVOLUTION_BAR = ("#000000, #808080, #ffffff", "darker", "grey = 0", "brighter")


def colour_bar(gradient: str, left: str, middle: str, right: str, width: str = "260px") -> widgets.HTML:
    """A horizontal colour bar with what its ends and middle mean."""
    bar = widgets.HTML(
        f'<div style="height:10px;background:linear-gradient(to right, {gradient});border:1px solid #bbb"></div>'
        f'<div style="display:flex;justify-content:space-between;font-size:11px;line-height:14px;color:#333">'
        f'<span>{left}</span><span>{middle}</span><span>{right}</span></div>', layout=widgets.Layout(width=width))
    bar.add_class("lrp-colourbar")
    return bar


def layer_label(bundle, layer: str) -> str:
    """A layer's readable name, with its step's name where that tells more: "conv5_3 (features.28)" (VGG),
    "layer4.2" (ResNet's block, computed by step layer4.2.relu@2)."""
    name = bundle.layer_name(layer)
    return name if layer.startswith(name) else f"{name} ({layer})"


def how_to_read(text: str, width: str = "260px") -> widgets.HTML:
    """One short line under a view that says how to read it."""
    line = widgets.HTML(f'<div style="font-size:12px;line-height:15px;color:#555">{text}</div>',
                        layout=widgets.Layout(width=width))
    line.add_class("lrp-how")
    return line
