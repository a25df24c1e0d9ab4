"""ReferenceStrip: what the selected neuron responds to across a dataset — its top images in the atlas, each cropped
to the neuron's receptive field around its maximum, ranked by the statistic the user picks; a click on a name
opens that image in the Explorer."""
from __future__ import annotations

import base64
from html import escape
from typing import Callable

import ipywidgets as widgets

from .common import View, how_to_read

#: the atlas's statistics as the toggle names them
STATISTICS = {"relevance · sum": "relevance_sum", "relevance · max": "relevance_max",
              "activation · sum": "activation_sum", "activation · max": "activation_max"}
MEANING = {"relevance_sum": "relevance (summed over its map)", "relevance_max": "relevance at its strongest position",
           "activation_sum": "activation (summed over its map)", "activation_max": "activation at its strongest position"}


class ReferenceStrip(View):
    observes = ("result", "statistic")

    def __init__(self, state, atlas_info: dict, folder: str, open_image: Callable[[str], None]):
        self.info, self.folder, self.open_image = atlas_info, folder, open_image
        self.statistic = widgets.ToggleButtons(options=list(STATISTICS), description="rank by",
                                               style={"button_width": "130px"})
        self.statistic.observe(self._pick, "value")
        self.caption = widgets.HTML()
        self.caption.add_class("lrp-reference-caption")
        self.strip = widgets.HTML()
        self.strip.add_class("lrp-reference-strip")
        self.opener = widgets.ToggleButtons(options=[], description="open", style={"button_width": "auto"})
        self.opener.observe(self._open, "value")
        super().__init__(state, [self.caption, self.statistic, self.strip, self.opener, how_to_read(
            "Images of the atlas's folder that drive this neuron most, each cut to the part of the image it sees; "
            "click a name to explain that image.", "760px")], layout=widgets.Layout(width="780px"))
        self.refresh()

    def fresh(self) -> bool:
        result = self.state.result
        return self.current() and (result is None or not result.request.selected or result.references is not None)

    def render(self) -> None:
        with self.quietly():
            self.statistic.value = next(label for label, name in STATISTICS.items() if name == self.state.statistic)
        result = self.state.result
        strip = result.references if result is not None else None
        if strip is None:
            self.caption.value = ("computing the reference images…" if result is not None and result.request.selected
                                  else "click a neuron in the graph to see the images of the atlas it responds to")
            self._show((), "")
            return
        count = len(strip.thumbnails)
        self.caption.value = (f"atlas <b>{escape(self.folder)}</b> ({self.info['images']} images): the {count} images "
                              f"where neuron <b>{strip.channel}</b> of {escape(strip.layer)} has the highest "
                              f"{MEANING[strip.statistic]}" + (f" — {escape(strip.note)}" if strip.note else ""))
        self._show(strip.thumbnails, strip)

    def _show(self, thumbnails, key) -> None:
        if not self.changed("strip", key):
            return
        self.strip.value = "".join(
            f'<img src="data:image/png;base64,{base64.b64encode(t.png).decode()}" title="{escape(t.image)}" '
            f'alt="{escape(t.image)}" style="width:88px;height:88px;margin:0 4px 4px 0">' for t in thumbnails)
        with self.quietly():
            self.opener.options = [(t.image, t.image) for t in thumbnails]
            self.opener.tooltips = [t.image for t in thumbnails]
            self.opener.value = None

    def _pick(self, change) -> None:
        if not self.syncing:
            self.state.statistic = STATISTICS[change["new"]]

    def _open(self, change) -> None:
        if not self.syncing and change["new"]:
            self.open_image(change["new"])
