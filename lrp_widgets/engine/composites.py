"""Composites: which rule each step of a network gets, by role. Presets live in a name registry.

The ``paper`` preset is the schedule of Montavon et al. that the paper follows, by role: z^B on the
first convolution, LRP-γ (γ = 0.25) on the lower half of the other convolutions (in forward order),
LRP-ε (ε = 0.25) on the upper half, LRP-0 on the Linear layers. For VGG16 that is z^B at
``features.0``, γ on ``features.2``–``features.14``, ε on ``features.17``–``features.28`` and LRP-0 on
the classifier. ``epsilon-gamma-box`` and ``epsilon-plus-flat`` are zennit's ``EpsilonGammaBox`` and
``EpsilonPlusFlat``. ``zero`` is LRP-0 everywhere: the check a user runs on their own network (with
every bias zero, the input relevance sums to the logit). Every other step gets the default rule of its
operation's registry entry (:mod:`.operations`), with the composite's stabiliser.

>>> from torchvision.models import vgg16
>>> from lrp_widgets.engine.network import trace
>>> rules = get_composite("paper").rules(trace(vgg16()))
>>> rules["features.0"], rules["features.14"], rules["features.17"], rules["classifier.6"]
(ZBox(...), Gamma(gamma=0.25, stabilizer=1e-06), Epsilon(epsilon=0.25), Zero(epsilon=0.0))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ModelError
from .images import IMAGENET_MEAN, IMAGENET_STD
from .network import Network
from .rules import RULES, Epsilon, Flat, Gamma, Rule, ZBox, Zero, ZPlus


def pixel_bounds(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[list[float], list[float]]:
    """The normalised images of all-0 and all-1 pixels, per channel: z^B's bounds."""
    return [(0 - m) / s for m, s in zip(mean, std)], [(1 - m) / s for m, s in zip(mean, std)]


#: What the schedule of a preset gives: the Conv2d step names and the Linear ones, in forward order → rules.
Schedule = Callable[[list[str], list[str]], dict[str, Rule]]


@dataclass
class Composite:
    """A rule for every step: per-name overrides first, then the schedule, then the operation's default.

    ``schedule(convs, linears)`` maps the Conv2d and Linear step names to rules; ``maxpool`` is
    ``"winner"`` (winner-takes-all) or ``"average"`` (proportional redistribution). Overrides are
    keyed by step or module name. ``bounds`` (the normalised all-0 and all-1 pixels, see
    :func:`pixel_bounds`; ``"data"``: the input's own range) replace the ImageNet bounds of the schedule's
    z^B rules. ``stabilizer`` is the ε of the default rules of sums, pools and normalisations (0: LRP-0).
    """

    name: str
    schedule: Schedule
    overrides: Mapping[str, Rule] = field(default_factory=dict)
    maxpool: str = "winner"
    bounds: tuple[Sequence[float], Sequence[float]] | str | None = None
    stabilizer: float = 1e-6

    def rules(self, network: Network) -> dict[str, Rule]:
        if self.maxpool not in ("winner", "average"):
            raise ModelError(f"unknown max-pool handling '{self.maxpool}': use 'winner' or 'average'")
        unknown = sorted(name for name in self.overrides if name not in network.by_name and name not in network.blocks)
        if unknown:
            raise ModelError(f"rule given for unknown layer(s) {', '.join(unknown)}")
        steps = [step for step in network.steps if step.op is not None]
        weighted = [step for step in steps if step.weighted]
        rules = self.schedule([s.name for s in weighted if isinstance(s.module, nn.Conv2d)],
                              [s.name for s in weighted if not isinstance(s.module, nn.Conv2d)])
        if self.bounds is not None:
            low, high = (None, None) if self.bounds == "data" else (Tensor(list(v)) for v in self.bounds)
            rules = {n: ZBox(low, high, r.stabilizer) if isinstance(r, ZBox) else r for n, r in rules.items()}
        for step in steps:
            rules.setdefault(step.name, Epsilon() if step.weighted else step.op.rule(self))
        rules.update({network.resolve(name): rule for name, rule in self.overrides.items()})
        return rules


def _paper(gamma_rule: Callable[[], Rule]) -> Schedule:
    def schedule(convs: list[str], linears: list[str]) -> dict[str, Rule]:
        rules: dict[str, Rule] = {n: Zero() for n in linears}
        if convs:
            rest = convs[1:]
            half = (len(rest) + 1) // 2
            rules.update({n: gamma_rule() for n in rest[:half]})
            rules.update({n: Epsilon(0.25) for n in rest[half:]})
            rules[convs[0]] = _box()
        return rules

    return schedule


def _box() -> ZBox:
    low, high = pixel_bounds()
    return ZBox(Tensor(low), Tensor(high))


def _epsilon(convs: list[str], linears: list[str]) -> dict[str, Rule]:
    return {n: Epsilon(0.25) for n in convs + linears}


def _zero(convs: list[str], linears: list[str]) -> dict[str, Rule]:
    return {n: Zero() for n in convs + linears}


def _zennit(first: Callable[[], Rule], conv: Callable[[], Rule]) -> Schedule:
    """zennit's EpsilonGammaBox / EpsilonPlusFlat: ``first`` on the first layer, ``conv`` on the other
    convolutions, ε = 1e-6 on the Linear layers."""
    def schedule(convs: list[str], linears: list[str]) -> dict[str, Rule]:
        rules: dict[str, Rule] = {n: conv() for n in convs}
        rules.update({n: Epsilon(1e-6) for n in linears})
        if convs:
            rules[convs[0]] = first()
        return rules

    return schedule


#: Presets by name.
PRESETS: dict[str, Callable[[], Composite]] = {
    "paper": lambda: Composite("paper", _paper(lambda: Gamma(0.25))),
    "zplus": lambda: Composite("zplus", _paper(ZPlus)),
    "epsilon": lambda: Composite("epsilon", _epsilon),
    "epsilon-gamma-box": lambda: Composite("epsilon-gamma-box", _zennit(_box, lambda: Gamma(0.25))),
    "epsilon-plus-flat": lambda: Composite("epsilon-plus-flat", _zennit(Flat, ZPlus)),
    "zero": lambda: Composite("zero", _zero, stabilizer=0.0),
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


def parse_rule(text: str) -> Rule:
    """A rule from text, for the command line: ``NAME`` or ``NAME:ARG`` with a rule of :data:`RULES`
    (``gamma:0.25``, ``epsilon:1e-6``, ``zero``, ``zplus``, ``flat``, ``pass``), ``zbox`` (ImageNet's pixel
    bounds) or ``zbox:LOW:HIGH``.

    >>> parse_rule("gamma:0.5")
    Gamma(gamma=0.5, stabilizer=1e-06)
    """
    name, *args = text.strip().split(":")
    if name not in RULES:
        raise ModelError(f"unknown rule '{name}': choose one of {', '.join(RULES)}")
    try:
        values = [float(arg) for arg in args]
    except ValueError:
        raise ModelError(f"rule '{text}': its parameters must be numbers") from None
    if name == "zbox":
        if len(values) not in (0, 2):
            raise ModelError(f"rule '{text}': write zbox or zbox:LOW:HIGH")
        low, high = values or pixel_bounds()
        return ZBox(torch.as_tensor(low), torch.as_tensor(high))
    try:
        return RULES[name](*values)
    except TypeError:
        raise ModelError(f"rule '{text}': {name} takes no such parameters") from None
