"""The Explorer: every view on one state, laid out to fit a laptop screen.

``explorer.state`` holds the inputs and the published result; ``explorer.session.wait()`` blocks until
every result of the current request is on screen. The model is a torchvision name (the picker offers
them all) or your own network: an ``nn.Module`` with its ``preprocess`` (image → tensor (C, H, W)), the
``mean``/``std`` it normalises with (z^B's pixel bounds) and ``categories``, or a ``LoadedModel``; the picker
lists it as "your model".

>>> explorer = Explorer(image="castle", weights="random")  # doctest: +SKIP
>>> explorer.state.target = 483; explorer.session.wait()  # doctest: +SKIP
>>> explorer.state.result.class_name  # doctest: +SKIP
'castle (483)'
>>> Explorer(model=my_net, preprocess=my_transform, mean=my_mean, std=my_std,
...          categories=["cat", "dog"])  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from PIL import Image
from torch import nn

from ..engine.images import open_image
from ..engine.models import LoadedModel
from ..errors import ModelError
from ..examples import EXAMPLES, load_example
from .controls import ClassSelector, ImagePicker, StatusBar
from .deconv import DeconvPanel
from .graph import LayerGraph
from .heatmaps import ActivationHeatmap, RelevanceHeatmap
from .models import ModelPicker
from .references import ReferenceStrip
from .session import Session
from .state import ExplorerState
from .threshold import ThresholdSlider


class Explorer(widgets.VBox):
    """All linked views of one explanation. ``model``: a torchvision model's name (loaded with ``weights``;
    default vgg16 and auto), or your network (see :func:`your_model`); ``image``: an example name, a file, or a PIL
    image; ``atlas``: a folder ``lrp-widgets atlas`` wrote — its model and weights are opened, and the selected
    neuron's reference images shown."""

    def __init__(self, model: str | nn.Module | LoadedModel | None = None, weights: str | None = None,
                 image: str | Path | Image.Image | None = "castle", background: bool = True, device: str = "cpu",
                 preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
                 categories: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, atlas: str | Path | None = None):
        references = None
        if atlas is not None:  # its model and weights, unless others are asked for (then they must be its)
            from ..atlas import Atlas
            from ..atlas.thumbnails import ReferenceImages

            references = ReferenceImages(Atlas.open(atlas))
            model, weights = atlas_model(references.atlas.info, atlas, model, weights)
        model, weights = model or "vgg16", weights or "auto"
        yours = your_model(model, preprocess, categories, mean, std)
        self.state = (ExplorerState(model_name=model, weights=weights) if yours is None else
                      ExplorerState(model_name=yours.name, weights=yours.weights))
        # the banner of untrained weights is in place before the first result (the page must not jump then)
        self.state.pretrained = yours.pretrained if yours is not None else weights != "random"
        self.session = Session(self.state, background=background, device=device, references=references)
        if yours is not None:
            self.session.add_model(yours)
        self.status = StatusBar(self.state)
        self.models = ModelPicker(self.state, weights, {yours.name: yours.weights} if yours is not None else {})
        self.picker = ImagePicker(self.state)
        self.classes = ClassSelector(self.state)
        self.relevance = RelevanceHeatmap(self.state)
        self.activation = ActivationHeatmap(self.state)
        self.deconv = DeconvPanel(self.state)
        self.threshold = ThresholdSlider(self.state)
        self.graph = LayerGraph(self.state)
        # above the fold at 1280×720: the image's heatmaps beside the classes and the α controls; below: the
        # graph, then the sweep and the selected neuron. Rows wrap on narrow screens (768 px: two heatmaps a row)
        wrap = widgets.Layout(flex_flow="row wrap", align_items="flex-start", grid_gap="12px")
        side = widgets.VBox([self.classes, self.threshold], layout=widgets.Layout(width="370px"))
        views = widgets.HBox([self.relevance, self.activation, side], layout=wrap)
        below = widgets.HBox([self.threshold.sweep_view, self.deconv], layout=wrap)
        self.references = None if references is None else ReferenceStrip(
            self.state, references.atlas.info, str(atlas), lambda path: self.load(references.folder / path))
        if self.references is not None:
            below.children = (*below.children, self.references)
        # clicked by the app's page (Voila template ``lrp``) once the views are on screen: see ``resend``
        self.resync = widgets.Button(description="resync", layout=widgets.Layout(display="none"))
        self.resync.add_class("lrp-resync")
        self.resync.on_click(lambda _: self.resend())
        choices = widgets.HBox([self.models, self.picker], layout=wrap)
        super().__init__([self.status, choices, views, self.graph, below, self.resync],
                         layout=widgets.Layout(width="100%", max_width="1400px"))
        self.add_class("lrp-explorer")
        if image is not None:
            self.load(image)

    def resend(self) -> None:
        """Send the full state of every widget of the app again. Voila's page builds its widgets from a
        snapshot of their states and drops the updates that arrive while it does; under load the worker
        publishes in that window and a caption could stay on "computing…" for good."""
        for widget in descendants(self):
            widget.send_state()

    def load(self, image: str | Path | Image.Image) -> None:
        """Show another image (an example name, a file path or a PIL image)."""
        if isinstance(image, str) and image in EXAMPLES and not Path(image).exists():
            if image in self.picker.examples.options:
                self.picker.examples.value = image
                return
            self.picker.load(lambda: load_example(image), image)
        else:
            name = Path(image).name if isinstance(image, (str, Path)) else getattr(image, "name", "your image")
            self.picker.load(lambda: open_image(image), name)


def atlas_model(info: dict, atlas: str | Path, model, weights: str | None) -> tuple[str, str]:
    """The atlas's model and weights; one line if the Explorer is asked for others."""
    asked = model if isinstance(model, str) or model is None else getattr(model, "name", type(model).__name__)
    if (asked or info["model"], weights or info["weights"]) != (info["model"], info["weights"]):
        raise ModelError(f"the atlas in '{atlas}' is of {info['model']} with {info['weights']} weights, not "
                         f"{asked or info['model']} with {weights or info['weights']} weights: open the Explorer with "
                         "its model, or build an atlas of yours")
    if not isinstance(model, (str, type(None))):
        raise ModelError("an atlas goes with a torchvision model by name (the one it was built with)")
    return info["model"], info["weights"]


def your_model(model: str | nn.Module | LoadedModel, preprocess: Callable[[Image.Image], torch.Tensor] | None,
               categories: Sequence[str] | None, mean: Sequence[float] | None,
               std: Sequence[float] | None) -> LoadedModel | None:
    """The network you give the Explorer: a ``LoadedModel`` as it is, or an ``nn.Module`` with its ``preprocess``
    (default: resize 256, centre-crop 224, normalisation with ``mean``/``std``), the ``mean``/``std`` of its input
    (default ImageNet's) and class names (weights "own"); None for a torchvision model's name."""
    if isinstance(model, nn.Module):
        return LoadedModel.of(model, categories or (), transform=preprocess, mean=mean, std=std)
    given = [name for name, value in (("preprocess", preprocess), ("categories", categories), ("mean", mean),
                                      ("std", std)) if value is not None]
    if given:
        raise ModelError(f"{', '.join(given)} go with a network of yours (a torch.nn.Module), not with "
                         f"{type(model).__name__}")
    return model if isinstance(model, LoadedModel) else None


def descendants(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    """``widget`` and every widget its synced traits hold (children, figure marks, graph nodes …)."""
    seen, stack = set(), [widget]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for name in current.keys:
            value = getattr(current, name)
            stack.extend(v for v in (value if isinstance(value, (list, tuple)) else [value])
                         if isinstance(v, widgets.Widget))
