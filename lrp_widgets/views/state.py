"""The one state object every view observes and writes to.

Inputs (image, model, weights, target, layer, α, k, selected neuron, display choices) are set by
views; the :class:`~lrp_widgets.views.session.Session` turns them into results (``bundle``,
``sweep_ready``) and status (``busy``, ``status``, ``error``).

>>> state = ExplorerState()
>>> state.alpha, state.k, state.heatmap_mode
(1.0, 5, 'selection')
"""
from __future__ import annotations

from traitlets import Any, Bool, Float, HasTraits, Int, Tuple, Unicode

#: What the relevance heatmap shows: the full explanation, the neurons Algorithm 1 keeps at the
#: chosen layer for α, the union of the k paths, or one path ("path 0" … "path k-1").
HEATMAP_MODES = ("full", "selection", "paths")


class ExplorerState(HasTraits):
    # what to explain
    image = Any(None, allow_none=True, help="PIL image")
    image_name = Unicode("")
    model_name = Unicode("vgg16")
    weights = Unicode("auto")
    target = Int(None, allow_none=True, help="explained class; None = the top-1 prediction")
    # the selection
    layer = Unicode("features.28")
    alpha = Float(1.0)
    k = Int(5)
    top_n = Int(8)
    selected = Tuple((), help="(layer, index) of the selected neuron, or ()")
    # display
    heatmap_mode = Unicode("selection")
    opacity = Float(0.8)
    # results and status (written by the session)
    bundle = Any(None, allow_none=True, help="analysis.bundle.Bundle of the current explanation")
    pretrained = Bool(True)
    paths_revision = Int(0, help="bumped when the bundle's k paths and their heatmaps are ready")
    sweep_ready = Bool(False)
    busy = Bool(False)
    status = Unicode("")
    error = Unicode("")
