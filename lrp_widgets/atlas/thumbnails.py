"""A neuron's reference images from an atlas, as thumbnails: each of its top-k images cropped to the neuron's
receptive field around the position of its maximum (zennit-crp's reference images without the relevance mask).

The receptive field of a layer follows from the kernels and strides on the way (a transformer's tokens see the
whole image).

>>> references = ReferenceImages(Atlas.open("atlas-out"))  # doctest: +SKIP
>>> strip = references.strip(model, "features.28", 337, "relevance_sum")  # doctest: +SKIP
>>> [thumbnail.image for thumbnail in strip.thumbnails][:2]  # doctest: +SKIP
['n02980441/0003.jpg', 'n02793495/0001.jpg']
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from ..analysis.render import png_bytes
from ..engine.images import display_image, open_image
from ..engine.models import LoadedModel
from ..engine.network import INPUT, Network
from ..errors import LRPWidgetsError
from .store import Atlas

#: thumbnails kept, by total bytes of PNG
CACHE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Thumbnail:
    image: str  # the path in the atlas's folder
    value: float
    png: bytes


@dataclass(frozen=True)
class Strip:
    """The top-k reference images of one neuron under one statistic; ``note`` says why there are none."""

    layer: str  # as the atlas names it
    channel: int
    statistic: str
    thumbnails: tuple[Thumbnail, ...] = ()
    note: str = ""


class ReferenceImages:
    """Thumbnails of an atlas's reference images (cached within ``CACHE_BYTES``); the receptive fields are
    measured on the atlas's model, given with each call."""

    def __init__(self, atlas: Atlas, size: int = 96):
        self.atlas, self.size = atlas, size
        self.folder = Path(atlas.info["folder"])
        self.labels = {step: label for label, step in atlas.info["layers"].items()}
        self._fields: dict[str, tuple[int, int, int]] = {}
        self._cache: OrderedDict[tuple, Thumbnail] = OrderedDict()

    def strip(self, model: LoadedModel, step: str, channel: int, statistic: str, k: int = 8) -> Strip:
        """The neuron's top-k thumbnails (``step``: the engine's step name, as the graph has it)."""
        label = self.labels.get(step)
        if label is None:
            return Strip(step, channel, statistic, note=f"the atlas has no reference images at this layer (it has "
                                                        f"{', '.join(self.atlas.layers)})")
        rows = self.atlas.references(label, channel, statistic)[:k]
        thumbnails = []
        for row in rows:
            try:
                thumbnails.append(self._thumbnail(model, step, row))
            except LRPWidgetsError:  # moved or deleted since the atlas was built
                continue
        note = "" if len(thumbnails) == len(rows) else f"{len(rows) - len(thumbnails)} of its images cannot be read"
        return Strip(label, channel, statistic, tuple(thumbnails), note)

    def _thumbnail(self, model: LoadedModel, step: str, row: dict) -> Thumbnail:
        key = (step, row["image"], row["y"], row["x"])
        if key not in self._cache:
            picture = display_image(open_image(self.folder / row["image"]))
            top, left, side = self._crop(model, step, row, picture.shape[0])
            crop = Image.fromarray(picture[top:top + side, left:left + side]).resize((self.size, self.size))
            self._cache[key] = Thumbnail(row["image"], row["value"], png_bytes(np.asarray(crop)))
            while sum(len(t.png) for t in self._cache.values()) > CACHE_BYTES and len(self._cache) > 1:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        thumbnail = self._cache[key]
        return Thumbnail(thumbnail.image, row["value"], thumbnail.png)

    def _crop(self, model: LoadedModel, step: str, row: dict, side: int) -> tuple[int, int, int]:
        """(top, left, side) of the receptive field around the maximum, inside the picture."""
        field, height, width = self.receptive_field(model, step)
        if field >= side or height == 0:
            return 0, 0, side
        cy, cx = (row["y"] + 0.5) * side / height, (row["x"] + 0.5) * side / width
        top = int(min(max(cy - field / 2, 0), side - field))
        left = int(min(max(cx - field / 2, 0), side - field))
        return top, left, field

    def receptive_field(self, model: LoadedModel, step: str) -> tuple[int, int, int]:
        """(the field's side in input pixels, the map's height and width); tokens and units: the whole input."""
        if step not in self._fields:
            from ..engine.predict import explainer_for

            size = model.size or 224
            explainer = explainer_for(model)
            shape = self.atlas.info["shapes"].get(self.labels[step])
            field = receptive_fields(explainer.network).get(step)
            self._fields[step] = (int(min(field, size)), *shape) if field and shape else (size, 0, 0)
        return self._fields[step]


def receptive_fields(network: Network) -> dict[str, float]:
    """Each step's receptive field (the side, in input pixels, of the input square one output position sees),
    from the kernels, strides and dilations of the convolutions and pools on the way (the largest over several
    inputs); ``inf`` once a step mixes all positions (global pooling, a linear layer, attention, a reshape)."""
    fields: dict[str, tuple[float, float]] = {INPUT: (1.0, 1.0)}  # (field, jump between neighbouring positions)
    for step in network.steps[1:]:
        sources = [fields[name] for name in step.inputs if name in fields]
        field, jump = (max(f for f, _ in sources), max(j for _, j in sources)) if sources else (math.inf, math.inf)
        module = step.module
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride, dilation = (_pair(getattr(module, name, 1)) for name in ("kernel_size", "stride", "dilation"))
            field, jump = field + (max(kernel) - 1) * max(dilation) * jump, jump * max(stride)
        elif step.role in ("weighted", "attention", "reshape") or (step.role == "pooling" and not isinstance(
                module, (nn.Upsample,))) or step.op is None:
            field = math.inf
        fields[step.name] = (field, jump)
    return {name: field for name, (field, _) in fields.items()}


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
