"""Pieces the views share: a bqplot figure showing one PNG, and view registration on the state."""
from __future__ import annotations

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
        self.mark = bqplot.Image(image=widgets.Image(value=png_bytes(BLANK), format="png"), scales=scales,
                                 x=[0, 1], y=[0, 1])
        super().__init__(marks=[self.mark], title=title, padding_x=0, padding_y=0,
                         fig_margin={"top": 30, "bottom": 4, "left": 4, "right": 4},
                         layout=widgets.Layout(width=size, height=size), title_style={"font-size": "12px"})

    @property
    def png(self) -> bytes:
        return self.mark.image.value

    def show(self, array: np.ndarray) -> None:
        # bqplot's image mark redraws when its image widget is replaced, not when the widget's value changes
        previous = self.mark.image
        self.mark.image = widgets.Image(value=png_bytes(array), format="png")
        previous.close()


class View(widgets.VBox):
    """A widget bound to one :class:`ExplorerState`; subclasses redraw in ``refresh``."""

    observes: tuple[str, ...] = ()

    def __init__(self, state: ExplorerState, children=(), **kwargs):
        super().__init__(children=list(children), **kwargs)
        self.state = state
        if self.observes:
            state.observe(lambda change: self.refresh(), list(self.observes))

    def refresh(self) -> None:
        raise NotImplementedError
