"""The engine (torch only): models, images, LRP rules and composites, explanations, deconvnet."""
from .composites import PRESETS, Composite, get_composite
from .deconv import deconvolve, record
from .images import open_image, preprocess
from .lrp import INPUT, Explainer, Explanation
from .models import MODELS, LoadedModel, UntrainedWeightsWarning, load_model
from .rules import RULES, Epsilon, Gamma, Pass, Proportional, WinnerTakesAll, ZBox, Zero, ZPlus

__all__ = ["PRESETS", "Composite", "get_composite", "deconvolve", "record", "open_image", "preprocess", "INPUT",
           "Explainer", "Explanation", "MODELS", "LoadedModel", "UntrainedWeightsWarning", "load_model", "RULES", "Epsilon",
           "Gamma", "Pass", "Proportional", "WinnerTakesAll", "ZBox", "Zero", "ZPlus"]
