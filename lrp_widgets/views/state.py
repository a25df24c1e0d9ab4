"""The one state object every view observes: inputs set by the controls, the published result.

Inputs (image, model, weights, class, layer, α, k, selected neuron) make the session's current
:class:`~lrp_widgets.views.session.Request`; display choices (heatmap mode, opacity) only change how a
view renders. The :class:`~lrp_widgets.views.session.Session` publishes ``request`` (the current one, at once),
``result`` (the current request's results), ``busy``, ``status`` and ``error``.

>>> state = ExplorerState()
>>> state.alpha, state.k, state.heatmap_mode, state.result
(1.0, 5, 'selection', None)
"""
from __future__ import annotations

from traitlets import Any, Bool, Float, HasTraits, Int, Tuple, Unicode

#: The traits a request is made of (``image_name`` only labels the image and changes with it).
INPUTS = ("image", "model_name", "weights", "target", "top_n", "layer", "alpha", "k", "selected", "statistic")


class ExplorerState(HasTraits):
    # what to explain
    image = Any(None, allow_none=True, help="PIL image")
    image_name = Unicode("")
    model_name = Unicode("vgg16", help="a torchvision model's name, or the name of one given to the session")
    weights = Unicode("auto", help='auto, imagenet, random, a state-dict file, or "own" (a model given to the session)')
    target = Int(None, allow_none=True, help="explained class; None = the top-1 prediction")
    # the selection
    layer = Unicode("", help="the α layer (a step name); \"\" or one the model lacks: its last")
    alpha = Float(1.0)
    k = Int(5)
    top_n = Int(8)
    selected = Tuple((), help="(layer, index) of the selected neuron, or ()")
    statistic = Unicode("relevance_sum", help="what the atlas's reference images of the neuron are ranked by")
    # display
    heatmap_mode = Unicode("selection", help="what the relevance heatmap shows: full (the explanation), "
                           "selection (the neurons Algorithm 1 keeps at the layer for α), paths (the union of "
                           "the k paths), path 0 … path k-1 (one path)")
    opacity = Float(0.8)
    # published by the session
    request = Any(None, allow_none=True, help="session.Request: the inputs being shown or computed (latest wins)")
    result = Any(None, allow_none=True, help="session.Result of the current request, or None before the first")
    pretrained = Bool(True)
    busy = Bool(False)
    status = Unicode("")
    error = Unicode("")

    @property
    def bundle(self):
        """The explanation on screen (``analysis.bundle.Bundle``), or None."""
        return self.result.bundle if self.result is not None else None
