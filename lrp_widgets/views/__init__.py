"""Linked views (ipywidgets, ipycytoscape, bqplot), each observing one :class:`ExplorerState`."""
from .controls import ClassSelector, ImagePicker, StatusBar
from .deconv import DeconvPanel
from .explorer import Explorer
from .graph import LayerGraph
from .heatmaps import ActivationHeatmap, RelevanceHeatmap
from .session import Session
from .state import ExplorerState
from .threshold import ThresholdSlider

__all__ = ["ActivationHeatmap", "ClassSelector", "DeconvPanel", "Explorer", "ExplorerState", "ImagePicker",
           "LayerGraph", "RelevanceHeatmap", "Session", "StatusBar", "ThresholdSlider"]
