"""The same computation in the peers (zennit, zennit-crp, Captum), for tests and benchmarks.

Needs the ``test`` extra. Our rules translate one-to-one into zennit's: ``Epsilon(ε)`` → ``Epsilon(ε)``
(LRP-0 → ε = 1e-12, the same up to 0/0), ``Gamma(γ)`` → ``Gamma(γ)`` (zennit 0.4.6 fixes the stabiliser
at 1e-6, our default), ``ZBox`` → ``ZBox`` with the bounds expanded to the input, ``ZPlus`` → ``ZPlus``,
average pools → ``Norm``; ReLU and winner-takes-all max-pool need no rule (the gradient does it).
Captum has no z^B rule: compare with it on presets without one.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .engine.composites import Composite, get_composite
from .engine.network import layer_sequence
from .engine.rules import Epsilon, Gamma, Proportional, Reshape, WinnerTakesAll, ZBox, ZPlus


def peer_model(model: nn.Module) -> nn.Module:
    """A copy with non-inplace ReLUs (the peers' hooks need them)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def zennit_composite(model: nn.Module, composite: Composite | str = "paper", input_shape=(1, 3, 224, 224)):
    """A zennit ``NameMapComposite`` applying our composite's rules (BN models get zennit's canonizer)."""
    from zennit import rules as z
    from zennit.composites import NameMapComposite

    composite = get_composite(composite) if isinstance(composite, str) else composite
    layers = layer_sequence(model)
    ours = composite.rules(layers)
    name_map = []
    for name, rule in ours.items():
        if isinstance(rule, Gamma):
            peer = z.Gamma(rule.gamma)
        elif isinstance(rule, Epsilon):
            peer = z.Epsilon(rule.epsilon if rule.epsilon > 0 else 1e-12)
        elif isinstance(rule, ZBox):
            low, high = (_expand(v, input_shape) for v in (rule.low, rule.high))
            peer = z.ZBox(low, high)
        elif isinstance(rule, ZPlus):
            peer = z.ZPlus()
        elif isinstance(rule, Proportional):
            peer = z.Norm()
        elif isinstance(rule, (WinnerTakesAll, Reshape)):
            continue
        else:
            peer = z.Pass()
        name_map.append(([name], peer))
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return NameMapComposite(name_map, canonizers=[ExactMergeBatchNorm()] if has_bn else None)


def ExactMergeBatchNorm():
    """zennit's ``SequentialMergeBatchNorm``, but the emptied batch norm becomes an exact identity.

    zennit leaves ``eps`` in place, so the "identity" computes ``x / sqrt(1 + eps)``; the γ rule's
    1e-6 stabiliser turns that 5e-6 into up to 1% of max |R| on VGG16-BN. With ``eps = 0`` zennit
    and we agree to 1e-7.
    """
    from zennit.canonizers import SequentialMergeBatchNorm

    class Exact(SequentialMergeBatchNorm):
        @staticmethod
        def merge_batch_norm(modules, batch_norm):
            SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
            batch_norm.eps = 0.0

    return Exact()


def _expand(value, shape) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32)
    return t[None, :, None, None].expand(shape).clone() if t.dim() == 1 else t.expand(shape).clone()


def logit_output(target: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Output relevance: the logit of the target (default: top-1), zeros elsewhere."""
    def output(logits: torch.Tensor) -> torch.Tensor:
        index = logits.argmax(1) if target is None else torch.full((logits.shape[0],), target)
        return torch.nn.functional.one_hot(index, logits.shape[1]) * logits

    return output


def zennit_relevance(model: nn.Module, x: torch.Tensor, composite: Composite | str = "paper",
                     target: int | None = None) -> torch.Tensor:
    """zennit's input relevance with our composite's rules."""
    from zennit.attribution import Gradient

    model = peer_model(model)
    with Gradient(model, zennit_composite(model, composite, tuple(x.shape))) as attributor:
        _, relevance = attributor(x, logit_output(target))
    return relevance


def captum_lrp(model: nn.Module, x: torch.Tensor, epsilon: float = 0.25, target: int | None = None):
    """Captum's LRP with LRP-ε on every conv/linear layer and winner-takes-all max-pool (ε ≈ 0 there);
    Captum's output relevance is the target's logit, as ours."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    model = peer_model(model)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.rule = EpsilonRule(epsilon)
        elif isinstance(module, nn.MaxPool2d):
            module.rule = EpsilonRule(1e-12)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            module.rule = IdentityRule()
    index = int(model(x).argmax(1)[0]) if target is None else target
    return LRP(model).attribute(x, target=index)


def captum_deconvolution(model: nn.Module, layer: str, channel: int, mode: str = "map"
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Captum's ``NeuronDeconvolution`` of one channel at the output of module ``layer``, in our convention
    (the start signal holds the rectified activations), as a function of the input batch; the model is
    copied once.

    ``map``: the callable selector ``½ Σ relu(a)²``, whose gradient is ``relu(a)``; ``max``: the
    ``(channel, h, w)`` tuple at the maximum in the first image (found with one extra forward pass), whose unit gradient
    is scaled by the rectified activation there.
    """
    import warnings

    from captum.attr import NeuronDeconvolution

    model = peer_model(model)
    module = model.get_submodule(layer)
    deconvolution = NeuronDeconvolution(model, module)

    def select(out: torch.Tensor) -> torch.Tensor:
        return out[:, channel].clamp(min=0).square().reshape(len(out), -1).sum(1) / 2

    def attribute(x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum warns about its ReLU hooks on every call
            if mode == "map":
                return deconvolution.attribute(x, select)
            seen = []
            hook = module.register_forward_hook(lambda _, __, out: seen.append(out[0, channel]))
            with torch.no_grad():
                model(x[:1])
            hook.remove()
            position = tuple(int(i) for i in torch.unravel_index(seen[0].argmax(), seen[0].shape))
            return deconvolution.attribute(x, (channel, *position)) * seen[0].max().clamp(min=0)

    return attribute
