"""Linked views (ipywidgets, ipycytoscape, bqplot) rendering one :class:`ExplorerState`.

Any view works alone: give it a state that a :class:`Session` computes for (``session.py`` tells the
data flow), set the inputs, and display it.

>>> import warnings
>>> from PIL import Image
>>> from lrp_widgets.views import ExplorerState, RelevanceHeatmap, Session
>>> state = ExplorerState(model_name="vgg11", weights="random")
>>> session = Session(state)
>>> heatmap = RelevanceHeatmap(state)   # display(heatmap) in a notebook
>>> state.image = Image.new("RGB", (224, 224), "gray")
>>> state.alpha = 0.5
>>> session.wait()
>>> state.result.request.alpha, heatmap.figure.title
(0.5, 'relevance: selection (α)')
"""
from .controls import ClassSelector, ImagePicker, StatusBar
from .deconv import DeconvPanel
from .explorer import Explorer
from .graph import LayerGraph
from .heatmaps import ActivationHeatmap, RelevanceHeatmap
from .models import ModelPicker
from .session import Request, Result, Session
from .state import ExplorerState
from .threshold import ThresholdSlider

__all__ = ["ActivationHeatmap", "ClassSelector", "DeconvPanel", "Explorer", "ExplorerState", "ImagePicker",
           "LayerGraph", "ModelPicker", "RelevanceHeatmap", "Request", "Result", "Session", "StatusBar",
           "ThresholdSlider"]
