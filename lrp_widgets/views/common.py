"""Pieces the views share: a bqplot figure showing one PNG, and view registration on the state."""
from __future__ import annotations

from contextlib import contextmanager

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


class View(widgets.VBox):
    """A widget rendering one :class:`ExplorerState`: ``refresh`` runs when a trait in ``observes`` changes,
    and redraws only what the state's ``result`` and display choices now call for."""

    observes: tuple[str, ...] = ()

    def __init__(self, state: ExplorerState, children=(), **kwargs):
        super().__init__(children=list(children), **kwargs)
        self.state = state
        self._drawn: dict[str, tuple] = {}
        self.syncing = False  # True while the view sets its own controls: their observers do nothing
        if self.observes:
            state.observe(lambda change: self.refresh(), list(self.observes))

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

    def refresh(self) -> None:
        raise NotImplementedError


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
