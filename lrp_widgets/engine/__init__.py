"""The engine (torch only): models, images, the traced network, LRP rules and composites, explanations,
deconvnet."""
from .composites import PRESETS, Composite, get_composite, parse_rule, pixel_bounds
from .deconv import deconvolve, record
from .images import open_image, preprocess
from .lrp import INPUT, Explainer, Explanation
from .models import FAMILIES, MODELS, LoadedModel, UntrainedWeightsWarning, load_model
from .network import Network, Step, trace
from .operations import OPERATIONS, Operation, register
from .rules import (RULES, Epsilon, Flat, FrozenScale, Gamma, Moves, Norm, Pass, Proportional, Rule, SignalTakesAll, Split,
                    WinnerTakesAll, ZBox, Zero, ZPlus)

__all__ = ["PRESETS", "Composite", "get_composite", "parse_rule", "pixel_bounds", "deconvolve", "record", "open_image",
           "preprocess", "INPUT", "Explainer", "Explanation", "FAMILIES", "MODELS", "LoadedModel",
           "UntrainedWeightsWarning", "load_model", "Network", "Step", "trace", "OPERATIONS", "Operation", "register", "RULES", "Epsilon", "Flat", "Gamma",
           "FrozenScale", "Moves", "Norm", "Pass", "Proportional", "Rule", "SignalTakesAll", "Split", "WinnerTakesAll", "ZBox", "Zero", "ZPlus"]
