"""References for the engine's "zero" preset and its operations, independent of the engine's code.

**LRP-0 as a modified gradient.** LRP-0 on every Conv2d/Linear layer, with each other operation as the
issue-17 engine specifies it (element-wise activations pass relevance unchanged, the squeeze-excitation
signal takes all, LayerNorm with its σ held constant, pools/means/interpolation/additions proportional
with stabiliser 0, max-pool winner-takes-all, index-moving operations exact), gives at every tensor

    R = value ⊙ g

where g is the gradient of the explained logit through a *modified* forward pass: each activation
``f(x)`` replaced by ``x · (f(x)/x)`` with the slope ``f(x)/x`` detached, each squeeze-excitation gate
detached, each LayerNorm's σ detached. (By induction from the output: a layer that is linear in its input
given the detached parts, ``y = L(x) + b``, has LRP-0 ``R_in = x ⊙ Lᵀ(R/y) = x ⊙ Lᵀg``; an activation with
the identity rule has ``R_in = R_out = f(x)·g = x·(f(x)/x)·g``; a winner of a max-pool has ``x = y``.)
Biases take part, as in LRP-0's z. So the input relevance is ``x ⊙ ∂logit/∂x`` through that pass — one
autograd call, no LRP code. :func:`modified_gradient_lrp0` does it for any model whose nonlinearities
are modules (torchvision's), with torchvision's ``SqueezeExcitation``, ``nn.LayerNorm`` and its
``LayerNorm2d`` handled.

Also: seeded weights and zeroed biases for the conservation tests, and zennit run with a composite of
its own (its ``LayerMapComposite``/``EpsilonGammaBox``…), for the networks zennit can explain by itself.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import SqueezeExcitation
from zennit import rules as z
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite
from zennit.types import Activation, AvgPool, Convolution

#: element-wise activations: the identity rule (relevance passes unchanged), as zennit's ``Pass``
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
               nn.ELU, nn.Tanh, nn.Mish, nn.Hardtanh, nn.Softplus, nn.SELU, nn.CELU)


def seeded(model: nn.Module, seed: int = 0, bias: float = 0.1) -> nn.Module:
    """Random weights (a slightly positive mean keeps ReLUs alive), biases ~ N(0, ``bias``), batch norm
    statistics and affine parameters, LayerNorm scales; eval mode, no gradients."""
    generator = torch.Generator().manual_seed(seed)

    def normal(t, mean, std):
        t.copy_(torch.randn(t.shape, generator=generator) * std + mean)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                normal(module.weight, 0.5 / fan_in, 1.5 / fan_in ** 0.5)
                if module.bias is not None:
                    normal(module.bias, 0.0, bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if getattr(module, "weight", None) is not None:
                    uniform(module.weight, 0.5, 1.5)
                if getattr(module, "bias", None) is not None:
                    normal(module.bias, 0.0, bias)
                if getattr(module, "running_mean", None) is not None:
                    normal(module.running_mean, 0.0, bias)
                    uniform(module.running_var, 0.5, 2.0)
    return model.eval().requires_grad_(False)


def zero_biases(model: nn.Module) -> nn.Module:
    """Every bias 0: conv/linear biases, batch norm and LayerNorm biases, batch norm running means (in place)."""
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor):
                module.bias.zero_()
            if getattr(module, "running_mean", None) is not None:
                module.running_mean.zero_()
    return model


def _slope(module: nn.Module, args, out):
    """An activation's output as ``x · slope`` with the slope ``f(x)/x`` detached (0 where x = 0)."""
    x = args[0]
    slope = torch.where(x == 0, torch.zeros_like(x), out / torch.where(x == 0, torch.ones_like(x), x))
    return x * slope.detach()


def _layer_norm_detached(module: nn.LayerNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """LayerNorm with σ held constant (torchvision's LayerNorm2d: over the channels of an NCHW tensor)."""
    channels_first = type(module).__name__ == "LayerNorm2d"

    def forward(x):
        if channels_first:
            x = x.permute(0, 2, 3, 1)
        dims = tuple(range(-len(module.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        sigma = torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + module.eps).detach()
        y = (x - mean) / sigma
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
        return y.permute(0, 3, 1, 2) if channels_first else y

    return forward


def _gate_detached(module: SqueezeExcitation) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module._scale(x).detach() * x


def modified_gradient_lrp0(model: nn.Module, x: torch.Tensor, target: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the "zero" preset's input relevance of ``model`` at ``x`` (module docstring), for the
    top-1 class or ``target``. The model is copied (in-place activations made out-of-place)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(_slope)
        elif isinstance(module, nn.LayerNorm):
            module.forward = _layer_norm_detached(module)
        elif isinstance(module, SqueezeExcitation):
            module.forward = _gate_detached(module)
        elif isinstance(module, (nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)):
            raise TypeError(f"no reference for {type(module).__name__}")
    data = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        logits = model(data)
        index = logits.argmax(1) if target is None else torch.full((len(x),), target)
        chosen = logits.gather(1, index[:, None]).sum()
        gradient, = torch.autograd.grad(chosen, data)
    return logits.detach(), (data * gradient).detach()


def lrp0_through(layer: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, relevance: torch.Tensor
                 ) -> torch.Tensor:
    """``a ⊙ Jᵀ(R / layer(a))`` with 0/0 = 0: LRP-0 through a layer that is linear in ``a`` (plus a bias): the
    relevance at its input, from the relevance at its output (a Conv2d's or Linear's own forward)."""
    a = a.detach().clone().requires_grad_()
    with torch.enable_grad():
        out = layer(a)
        s = torch.where(out == 0, torch.zeros_like(out), relevance / torch.where(out == 0, torch.ones_like(out), out))
        c, = torch.autograd.grad(out, a, s.detach())
    return (a * c).detach()


def zero_layer_map() -> LayerMapComposite:
    """zennit's LRP-0 everywhere: ε = 1e-12 on convolutions and Linear, Pass on activations, Norm on average
    pools (zennit's own ``LAYER_MAP_BASE``)."""
    return LayerMapComposite([(Activation, z.Pass()), (AvgPool, z.Norm()), (Convolution, z.Epsilon(1e-12)),
                              (nn.Linear, z.Epsilon(1e-12))])


def zennit_input_relevance(model: nn.Module, x: torch.Tensor, composite, target: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """zennit's logits and input relevance with one of its composites; the output relevance is the target's
    (default top-1) logit, zeros elsewhere."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False

    def output(logits):
        index = logits.argmax(1) if target is None else torch.full((logits.shape[0],), target)
        return F.one_hot(index, logits.shape[1]) * logits

    with Gradient(model, composite) as attributor:
        logits, relevance = attributor(x.detach().clone(), output)
    return logits.detach(), relevance.detach()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours − reference| / max |reference|."""
    scale = float(reference.abs().max())
    assert scale > 0, "the reference is all zeros: nothing compared"
    return float((ours - reference).abs().max()) / scale
