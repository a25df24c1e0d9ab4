"""Composites: which rule each layer gets. Presets live in a name registry.

The ``paper`` preset is the schedule of Montavon et al. that the paper follows; for VGG16 it is
z^B at ``features.0``, LRP-γ (γ = 0.25) on ``features.2``–``features.14``, LRP-ε (ε = 0.25) on
``features.17``–``features.28`` and LRP-0 on the classifier. It is defined by position, so other
models get the same shape of schedule: z^B on the first conv, γ on the lower half of the other
convs, ε on the upper half, LRP-0 on the linear layers.

>>> from torchvision.models import vgg16
>>> from lrp_widgets.engine.network import layer_sequence
>>> rules = get_composite("paper").rules(layer_sequence(vgg16()))
>>> rules["features.0"], rules["features.14"], rules["features.17"], rules["classifier.6"]
(ZBox(...), Gamma(gamma=0.25, stabilizer=1e-06), Epsilon(epsilon=0.25), Epsilon(epsilon=0.0))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import Tensor, nn

from ..errors import ModelError
from .network import WEIGHTED, Layer
from .rules import Epsilon, Gamma, Pass, Proportional, Reshape, Rule, WinnerTakesAll, ZBox, Zero, ZPlus

#: ImageNet normalisation of torchvision's weights: the bounds of z^B are the normalised black and white images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_bounds(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[list[float], list[float]]:
    """The normalised images of all-0 and all-1 pixels, per channel."""
    return [(0 - m) / s for m, s in zip(mean, std)], [(1 - m) / s for m, s in zip(mean, std)]


@dataclass
class Composite:
    """A rule for every layer: per-name overrides first, then the schedule, then the layer type.

    ``schedule(weighted_names)`` maps the Conv2d/Linear layer names to rules; ``maxpool`` is
    ``"winner"`` (winner-takes-all) or ``"average"`` (proportional redistribution).
    """

    name: str
    schedule: Callable[[list[str], list[Layer]], dict[str, Rule]]
    overrides: Mapping[str, Rule] = field(default_factory=dict)
    maxpool: str = "winner"

    def rules(self, layers: list[Layer]) -> dict[str, Rule]:
        if self.maxpool not in ("winner", "average"):
            raise ModelError(f"unknown max-pool handling '{self.maxpool}': use 'winner' or 'average'")
        names = {layer.name for layer in layers}
        unknown = sorted(set(self.overrides) - names)
        if unknown:
            raise ModelError(f"rule given for unknown layer(s) {', '.join(unknown)}")
        weighted = [layer.name for layer in layers if isinstance(layer.module, WEIGHTED)]
        rules = self.schedule(weighted, layers)
        for layer in layers:
            rules.setdefault(layer.name, self._by_type(layer.module))
        rules.update(self.overrides)
        return rules

    def _by_type(self, module: nn.Module) -> Rule:
        if isinstance(module, nn.MaxPool2d):
            return WinnerTakesAll() if self.maxpool == "winner" else Proportional()
        if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return Proportional()
        if isinstance(module, nn.Flatten):
            return Reshape()
        if isinstance(module, WEIGHTED):
            return Epsilon()
        return Pass()


def _paper(gamma_rule: Callable[[], Rule]) -> Callable[[list[str], list[Layer]], dict[str, Rule]]:
    def schedule(weighted: list[str], layers: list[Layer]) -> dict[str, Rule]:
        modules = dict(layers)
        convs = [n for n in weighted if isinstance(modules[n], nn.Conv2d)]
        low, high = pixel_bounds()
        rules: dict[str, Rule] = {n: Zero() for n in weighted if isinstance(modules[n], nn.Linear)}
        if convs:
            rest = convs[1:]
            half = (len(rest) + 1) // 2
            rules.update({n: gamma_rule() for n in rest[:half]})
            rules.update({n: Epsilon(0.25) for n in rest[half:]})
            rules[convs[0]] = ZBox(Tensor(low), Tensor(high))
        return rules

    return schedule


def _epsilon(weighted: list[str], layers: list[Layer]) -> dict[str, Rule]:
    return {n: Epsilon(0.25) for n in weighted}


#: Presets by name.
PRESETS: dict[str, Callable[[], Composite]] = {
    "paper": lambda: Composite("paper", _paper(lambda: Gamma(0.25))),
    "zplus": lambda: Composite("zplus", _paper(ZPlus)),
    "epsilon": lambda: Composite("epsilon", _epsilon),
}


def get_composite(name: str = "paper", overrides: Mapping[str, Rule] | None = None,
                  maxpool: str = "winner") -> Composite:
    """A preset by name, with per-layer rule overrides and the max-pool handling."""
    if name not in PRESETS:
        raise ModelError(f"unknown rule preset '{name}': choose one of {', '.join(PRESETS)}")
    composite = PRESETS[name]()
    composite.overrides = dict(overrides or {})
    composite.maxpool = maxpool
    return composite
