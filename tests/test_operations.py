"""Every operation of the engine's registry (issue 17), by hand on tiny seeded networks:

(a) conservation: under the "zero" preset with every bias zeroed, the input relevance sums to the explained
    logit, and equals LRP-0 as a modified gradient (tests/reference.py), an implementation without LRP code;
(b) algebra: the relevance at the operation's input equals the rule's formula written out here, applied to
    the relevance at its output (biases, batch norm statistics and LayerNorm biases non-zero).

Each network is ``pre`` (Conv2d 3 → 4) → the operation → ``post`` (Conv2d, or Linear on a flat or
channels-last output) → ReLU → flatten → ``head`` (Linear, 3 classes). The relevance at the operation's
output is LRP-0 through ``post`` by hand (from the engine's relevance at ``post``); the relevance at its input
is the engine's at ``pre``. Each formula is checked to differ from the rules it could be confused with
(relevance passed unchanged, the plain gradient, …), so a wrong rule fails.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models.convnext import LayerNorm2d
from torchvision.models.shufflenetv2 import channel_shuffle
from torchvision.ops import Permute, SqueezeExcitation, StochasticDepth

from lrp_widgets.engine import Explainer, Gamma, get_composite

from .reference import lrp0_through, modified_gradient_lrp0, seeded, zero_biases

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
CONSERVATION = 1e-5  # relative to the logit
ALGEBRA = 1e-5  # × max |expected relevance|
REFERENCE = 1e-4  # × max |reference relevance|


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """a / b with 0 where b = 0 (LRP-0's 0/0 = 0)."""
    return torch.where(b == 0, torch.zeros_like(a), a / torch.where(b == 0, torch.ones_like(b), b))


def proportional(f: Callable[[Tensor], Tensor], x: Tensor, relevance: Tensor) -> Tensor:
    """``x ⊙ Jᵀ(R / f(x))`` for a map f that is linear in x (J its Jacobian), stabiliser 0."""
    x = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        out = f(x)
        c, = torch.autograd.grad(out, x, safe_divide(relevance, out.detach()))
    return (x * c).detach()


def gradient_times_input(f: Callable[[Tensor], Tensor], x: Tensor, relevance: Tensor) -> Tensor:
    """``x ⊙ ∂f/∂xᵀ (R / f(x))`` through the full non-linear f: a LayerNorm rule without σ held constant."""
    return proportional(f, x, relevance)


def gradient(f: Callable[[Tensor], Tensor], x: Tensor, relevance: Tensor) -> Tensor:
    """``∂f/∂xᵀ R``: relevance through the operation's gradient (what zennit does where no rule is hooked)."""
    x = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        c, = torch.autograd.grad(f(x), x, relevance)
    return c.detach()


def average(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """A max-pool as an average pool with the proportional rule (the "average" option, not the default)."""
    pool = op if isinstance(op, nn.MaxPool2d) else nn.MaxPool2d(2)
    return proportional(lambda x: F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding), a, relevance)


def assert_close(ours: Tensor, expected: Tensor, tolerance: float = ALGEBRA, what: str = "") -> None:
    assert ours.shape == expected.shape, f"{what}: shape {tuple(ours.shape)}, expected {tuple(expected.shape)}"
    scale = float(expected.abs().max())
    assert scale > 0, f"{what}: the expected relevance is all zeros, nothing is checked"
    error = float((ours - expected).abs().max()) / scale
    assert error <= tolerance, f"{what}: max |difference| = {error:.2e} × max |R|"


def assert_discriminates(expected: Tensor, *wrong: Tensor) -> None:
    """The formula differs from the rules it could be confused with by far more than the tolerance: a
    wrong rule in the engine fails the test."""
    scale = float(expected.abs().max())
    for index, other in enumerate(wrong):
        if other.shape != expected.shape:
            continue
        assert float((other - expected).abs().max()) > 1e-2 * scale, f"alternative {index} is not told apart"


# --- the sandwich ------------------------------------------------------------------------------------------


class Function(nn.Module):
    """An operation written in a forward (fx traces through it: steps ``op.<function>``)."""

    def __init__(self, function: Callable[[Tensor], Tensor]):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: a parameter times the signal (on the left or on the right)."""

    def __init__(self, channels: int = 4, left: bool = True):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.gamma = nn.Parameter(torch.rand(channels, 1, 1, generator=generator) + 0.5)
        self.left = left

    def forward(self, x):
        return self.gamma * x if self.left else x * self.gamma


class Gate(nn.Module):
    """A hand-written squeeze-excitation: ``x · σ(fc(mean(x)))`` (or the gate on the left)."""

    def __init__(self, channels: int = 4, left: bool = False):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.left = left

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        return gate * x if self.left else x * gate


class Sandwich(nn.Module):
    """pre (Conv2d 3 → 4) → op → post → ReLU → flatten → head (Linear → 3)."""

    def __init__(self, op: nn.Module, post: nn.Module | None = None, channels: int = 4):
        super().__init__()
        self.pre = nn.Conv2d(3, channels, 3, padding=1)
        self.op = op
        with torch.no_grad():
            shape = op.eval()(self.pre(X)).shape
        if post is None:
            post = nn.Conv2d(shape[1], 5, 3, padding=1) if len(shape) == 4 else nn.Linear(shape[-1], 5)
        self.post = post
        self.relu = nn.ReLU()
        with torch.no_grad():
            size = self.relu(self.post(op(self.pre(X)))).flatten(1).shape[1]
        self.head = nn.Linear(size, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.relu(self.post(self.op(self.pre(x)))), 1))


# --- the rules by hand: (input of the op, its module, relevance at its output) → relevance at its input --------


def passes(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    return relevance


def layer_norm_rule(dims: tuple[int, ...], channels_first: bool = False):
    """LRP-0 on ``x ↦ w⊙(x − mean x)/σ`` with σ held constant, in closed form: with u = w ⊙ R / y,
    ``R_in = x ⊙ (u − mean(u)) / σ`` (Jᵀ of the centring is the centring)."""
    def rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
        norm = next(m for m in op.modules() if isinstance(m, nn.LayerNorm)) if not isinstance(op, Function) else None
        x, r = (a.permute(0, 2, 3, 1), relevance.permute(0, 2, 3, 1)) if channels_first else (a, relevance)
        eps = norm.eps if norm is not None else 1e-5
        weight = norm.weight if norm is not None and norm.weight is not None else torch.ones(())
        bias = norm.bias if norm is not None and norm.bias is not None else torch.zeros(())
        mean = x.mean(dims, keepdim=True)
        sigma = torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
        y = weight * (x - mean) / sigma + bias
        u = weight * safe_divide(r, y)
        out = x * (u - u.mean(dims, keepdim=True)) / sigma
        return out.permute(0, 3, 1, 2) if channels_first else out
    return rule


def channels_last_layer_norm_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """Permute → LayerNorm over C → Permute back: the LayerNorm rule per pixel, over the channels."""
    return layer_norm_rule((-1,), channels_first=True)(a, op[1], relevance)


def batch_norm_rule(a: Tensor, op: nn.Sequential, relevance: Tensor) -> Tensor:
    """ReLU (passes), then an unfolded batch norm ``y = w⊙(x − μ)/σ + b``: LRP-0 on its linear map x ↦ w⊙x/σ,
    ``R_in = x ⊙ (w/σ) ⊙ R / y``."""
    relu, bn = op
    x = relu(a)
    scale = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) / torch.sqrt(
        bn.running_var + bn.eps)
    y = bn(x)
    return x * scale[:, None, None] * safe_divide(relevance, y)


def mean_rule(keepdim: bool):
    """Mean over H, W: ``R_in = a / (K · mean) · R`` with K = H·W."""
    def rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
        k = a.shape[2] * a.shape[3]
        mean = a.mean((2, 3), keepdim=True)
        r = relevance if keepdim else relevance[:, :, None, None]
        return a / (k * mean) * r
    return rule


def proportional_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    return proportional(op, a, relevance)


def nearest_twice_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """Nearest ×2: each input is copied to a 2×2 block and f(x) = x there, so it gets the block's relevance."""
    return F.avg_pool2d(relevance, 2) * 4


def winner_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """Max-pool: each window's relevance goes to its maximum (overlapping windows add up)."""
    pool = op if isinstance(op, nn.MaxPool2d) else nn.MaxPool2d(2)
    _, switches = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding, return_indices=True)
    flat = torch.zeros_like(a).flatten(2)
    flat.scatter_add_(2, switches.flatten(2), relevance.flatten(2))
    return flat.reshape(a.shape)


def transposed_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    return relevance.transpose(2, 3)


def shuffled_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """channel_shuffle(x, 2) on 4 channels puts input channel i·2 + k … at output k·2 + i: undo it."""
    groups, per = 2, a.shape[1] // 2
    back = torch.empty(a.shape[1], dtype=torch.long)
    for i in range(groups):
        for k in range(per):
            back[i * per + k] = k * groups + i
    return relevance[:, back]


def swapped_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    half = a.shape[1] // 2
    return torch.cat([relevance[:, half:], relevance[:, :half]], 1)


def tokens_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    """x.flatten(2).transpose(1, 2): (N, C, H, W) → (N, H·W, C) tokens."""
    return relevance.transpose(1, 2).reshape(a.shape)


def sliced_rule(a: Tensor, op: nn.Module, relevance: Tensor) -> Tensor:
    out = torch.zeros_like(a)
    out[:, 1:3] = relevance
    return out


def chunk_swap(x):
    first, second = x.chunk(2, 1)
    return torch.cat([second, first], 1)


def view_round_trip(x):
    n, c, h, w = x.shape
    return x.view(n, c, h * w).reshape(n, 2, -1).reshape(n, c, h, w)


@dataclass
class Case:
    op: Callable[[], nn.Module]
    rule: Callable[[Tensor, nn.Module, Tensor], Tensor]
    leaf: bool = False  # one torch.nn module: its step is named "op"
    reference: bool = True  # every nonlinearity is a module: the modified-gradient reference applies
    #: the rules it must be told apart from: "pass" (R unchanged), "gradient" (∂fᵀR), "gradient×input"
    #: (x ⊙ ∂fᵀ(R/f(x)) through the full non-linear map), "average" (a max-pool as an average pool)
    wrong: tuple[str, ...] = ()


NORM = ("pass", "gradient×input")

ACTIVATIONS = {
    "ReLU": nn.ReLU, "ReLU-inplace": lambda: nn.ReLU(inplace=True), "ReLU6": nn.ReLU6,
    "LeakyReLU": lambda: nn.LeakyReLU(0.1), "SiLU": nn.SiLU, "SiLU-inplace": lambda: nn.SiLU(inplace=True),
    "GELU": nn.GELU, "GELU-tanh": lambda: nn.GELU("tanh"), "Hardswish": nn.Hardswish, "Hardsigmoid": nn.Hardsigmoid,
    "Sigmoid": nn.Sigmoid, "ELU": nn.ELU, "Tanh": nn.Tanh,
}
FUNCTIONAL_ACTIVATIONS = {
    "F.relu": F.relu, "F.silu": F.silu, "F.gelu": F.gelu, "F.hardswish": F.hardswish, "torch.sigmoid": torch.sigmoid,
    "Tensor.sigmoid": lambda x: x.sigmoid(), "torch.tanh": torch.tanh, "F.leaky_relu": lambda x: F.leaky_relu(x, 0.1),
    "F.elu": F.elu, "F.relu6": F.relu6, "F.hardsigmoid": F.hardsigmoid,
}

CASES: dict[str, Case] = {
    **{name: Case(build, passes, leaf=True) for name, build in ACTIVATIONS.items()},
    **{name: Case(lambda f=f: Function(f), passes, reference=False) for name, f in FUNCTIONAL_ACTIVATIONS.items()},
    # normalisations
    "LayerNorm(C,H,W)": Case(lambda: nn.LayerNorm([4, 8, 8]), layer_norm_rule((1, 2, 3)), leaf=True, wrong=NORM),
    "LayerNorm2d": Case(lambda: LayerNorm2d(4), layer_norm_rule((-1,), channels_first=True), wrong=NORM),
    "channels-last LayerNorm": Case(lambda: nn.Sequential(Permute([0, 2, 3, 1]), nn.LayerNorm(4),
                                                          Permute([0, 3, 1, 2])), channels_last_layer_norm_rule,
                                 wrong=NORM),
    "F.layer_norm": Case(lambda: Function(lambda x: F.layer_norm(x, (4, 8, 8))), layer_norm_rule((1, 2, 3)),
                         reference=False, wrong=NORM),
    "BatchNorm after ReLU": Case(lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)), batch_norm_rule,
                                 wrong=("pass",)),
    "BatchNorm(affine=False) after ReLU": Case(lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4, affine=False)),
                                               batch_norm_rule, wrong=("pass",)),
    # scaling by a constant, identities
    "layer scale": Case(LayerScale, passes),
    "layer scale on the right": Case(lambda: LayerScale(left=False), passes),
    "2 * x": Case(lambda: Function(lambda x: 2.0 * x), passes),
    "x * 0.5": Case(lambda: Function(lambda x: x * 0.5), passes),
    "x.mul(3)": Case(lambda: Function(lambda x: x.mul(3.0)), passes),
    "StochasticDepth": Case(lambda: StochasticDepth(0.5, "row"), passes),
    "Dropout": Case(lambda: nn.Dropout(0.3), passes, leaf=True),
    "Identity": Case(nn.Identity, passes, leaf=True),
    # gates: the signal takes all
    "SqueezeExcitation": Case(lambda: SqueezeExcitation(4, 2), passes),
    "SqueezeExcitation-hardsigmoid": Case(lambda: SqueezeExcitation(4, 2, scale_activation=nn.Hardsigmoid), passes),
    "x * sigmoid(fc(mean x))": Case(Gate, passes, reference=False),
    "sigmoid(fc(mean x)) * x": Case(lambda: Gate(left=True), passes, reference=False),
    # index-moving operations
    "permute round trip": Case(lambda: Function(lambda x: x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)),
                               passes),
    "view round trip": Case(lambda: Function(view_round_trip), passes),
    "transpose": Case(lambda: Function(lambda x: x.transpose(2, 3)), transposed_rule, wrong=("pass",)),
    "torch.transpose": Case(lambda: Function(lambda x: torch.transpose(x, 2, 3)), transposed_rule, wrong=("pass",)),
    "channel shuffle": Case(lambda: Function(lambda x: channel_shuffle(x, 2)), shuffled_rule, wrong=("pass",)),
    "chunk + getitem": Case(lambda: Function(chunk_swap), swapped_rule, wrong=("pass",)),
    "slice": Case(lambda: Function(lambda x: x[:, 1:3]), sliced_rule),
    "tokens": Case(lambda: Function(lambda x: x.flatten(2).transpose(1, 2)), tokens_rule),
    # means, pools, interpolation: proportional
    "mean over H, W": Case(lambda: Function(lambda x: x.mean((2, 3))), mean_rule(False), wrong=("gradient",)),
    "mean keepdim": Case(lambda: Function(lambda x: x.mean((2, 3), keepdim=True)), mean_rule(True),
                         wrong=("gradient",)),
    "torch.mean": Case(lambda: Function(lambda x: torch.mean(x, dim=[-2, -1])), mean_rule(False), wrong=("gradient",)),
    "AvgPool2d": Case(lambda: nn.AvgPool2d(2), proportional_rule, leaf=True, wrong=("gradient",)),
    "AdaptiveAvgPool2d(3)": Case(lambda: nn.AdaptiveAvgPool2d(3), proportional_rule, leaf=True,
                                 wrong=("gradient",)),
    "F.avg_pool2d": Case(lambda: Function(lambda x: F.avg_pool2d(x, 2)), proportional_rule, wrong=("gradient",)),
    "interpolate nearest ×2": Case(lambda: Function(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
                                   nearest_twice_rule),
    "interpolate nearest to 5×5": Case(lambda: Function(lambda x: F.interpolate(x, size=(5, 5), mode="nearest")),
                                       proportional_rule),
    "Upsample bilinear ×2": Case(lambda: nn.Upsample(scale_factor=2, mode="bilinear"), proportional_rule, leaf=True,
                                 wrong=("gradient",)),
    "interpolate bilinear align_corners": Case(
        lambda: Function(lambda x: F.interpolate(x, size=(11, 11), mode="bilinear", align_corners=True)),
        proportional_rule, wrong=("gradient",)),
    # max-pool: winner takes all
    "MaxPool2d": Case(lambda: nn.MaxPool2d(2), winner_rule, leaf=True, wrong=("average",)),
    "MaxPool2d overlapping": Case(lambda: nn.MaxPool2d(3, 2, 1), winner_rule, leaf=True, wrong=("average",)),
    "F.max_pool2d": Case(lambda: Function(lambda x: F.max_pool2d(x, 2)), winner_rule, wrong=("average",)),
}


def network(name: str, biases: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = seeded(Sandwich(CASES[name].op()), seed=1)
    return model if biases else zero_biases(model)


def relevance_around(model: Sandwich, explanation) -> tuple[Tensor, Tensor, Tensor]:
    """The op's input, the relevance at its input (the engine's, at ``pre``) and at its output (by hand)."""
    a = model.pre(X)
    out = model.op(a.clone())
    return a, explanation.relevances["pre"], lrp0_through(model.post, out, explanation.relevances["post"])


# --- (a) conservation and the modified-gradient reference ------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_conservation_under_zero_with_biases_zeroed(name):
    model = network(name, biases=False)
    explanation = Explainer(model, "zero").explain(X)
    logits = model(X)
    torch.testing.assert_close(explanation.logits, logits, rtol=1e-5, atol=1e-6)
    logit = float(logits.max())
    total = float(explanation.relevances["input"].sum())
    assert abs(total / logit - 1) <= CONSERVATION, f"Σ R_input = {total}, logit {logit}"
    if CASES[name].reference:
        _, expected = modified_gradient_lrp0(model, X)
        assert_close(explanation.relevances["input"], expected, REFERENCE, "input relevance vs modified gradient")


# --- (b) the rule by hand -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_rule_by_hand(name):
    case = CASES[name]
    model = network(name)
    explanation = Explainer(model, "zero").explain(X)
    torch.testing.assert_close(explanation.logits, model(X), rtol=1e-5, atol=1e-6)
    a, ours, relevance = relevance_around(model, explanation)
    expected = case.rule(a, model.op, relevance)
    assert_close(ours, expected, ALGEBRA, f"{name}: relevance at the input")
    if case.leaf:
        assert_close(explanation.relevances["op"], relevance, ALGEBRA, f"{name}: relevance at the output")
    alternatives = {"pass": lambda: relevance, "gradient": lambda: gradient(model.op, a, relevance),
                    "gradient×input": lambda: gradient_times_input(model.op, a, relevance),
                    "average": lambda: average(a, model.op, relevance)}
    wrong = [alternatives[kind]() for kind in case.wrong]
    assert all(other.shape == expected.shape for other in wrong)
    assert_discriminates(expected, *wrong)


def test_the_layer_norm_formula_is_the_jacobian_with_sigma_constant():
    """The closed form of the LayerNorm rule equals ``x ⊙ Jᵀ(R/y)`` with J from torch.autograd.functional.jacobian
    of ``x ↦ w⊙(x − mean x)/σ`` with σ a constant (a check of the test's own formula)."""
    model = network("LayerNorm(C,H,W)")
    norm = model.op
    a = model.pre(X)
    relevance = torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    sigma = torch.sqrt(a.var((1, 2, 3), unbiased=False, keepdim=True) + norm.eps)

    def linear(x):
        return (norm.weight * (x - x.mean((1, 2, 3), keepdim=True)) / sigma).flatten()

    jacobian = torch.autograd.functional.jacobian(linear, a).reshape(a.numel(), a.numel())
    expected = a.flatten() * (jacobian.T @ (relevance.flatten() / norm(a).flatten()))
    torch.testing.assert_close(layer_norm_rule((1, 2, 3))(a, norm, relevance).flatten(), expected,
                               rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    # LRP-0 on the full map (σ not constant: the gradient) and relevance passed unchanged are not this rule
    assert_discriminates(expected.reshape(a.shape), relevance, gradient_times_input(norm, a, relevance))


def test_squeeze_excitation_gate_branch_gets_no_relevance():
    model = network("SqueezeExcitation")
    explanation = Explainer(model, "zero").explain(X)
    for name in ("op.fc1", "op.fc2"):
        relevance = explanation.relevances.get(name)
        assert relevance is None or not relevance.any(), name


def test_batch_norm_at_the_input():
    """An unfolded batch norm reading the input: ``R_input = x ⊙ (w/σ) ⊙ R / y``."""
    torch.manual_seed(0)
    model = seeded(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 64, 3)), seed=2)
    explanation = Explainer(model, "zero").explain(X)
    torch.testing.assert_close(explanation.logits, model(X), rtol=1e-5, atol=1e-6)
    bn = model[0]
    y = bn(X)
    relevance = lrp0_through(model[1], y, explanation.relevances["1"])
    expected = X * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None, None] * safe_divide(relevance, y)
    assert_close(explanation.relevances["input"], expected, ALGEBRA, "input relevance")
    assert_discriminates(expected, relevance)
    zero = Explainer(zero_biases(model), "zero").explain(X)
    assert abs(float(zero.relevances["input"].sum() / zero.logits.max()) - 1) <= CONSERVATION


# --- convolutions with their own padding, dilation, groups: LRP-0 and LRP-γ by hand ------------------------------


CONVS = {
    "reflect": lambda: nn.Conv2d(4, 5, 3, padding=1, padding_mode="reflect"),
    "circular": lambda: nn.Conv2d(4, 5, 3, padding=1, padding_mode="circular"),
    "replicate": lambda: nn.Conv2d(4, 5, 3, padding=2, padding_mode="replicate"),
    "same-3": lambda: nn.Conv2d(4, 5, 3, padding="same"),
    "same-4": lambda: nn.Conv2d(4, 5, 4, padding="same"),
    "same-reflect": lambda: nn.Conv2d(4, 6, 4, padding="same", padding_mode="reflect", groups=2),
    "dilated-grouped": lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
    "strided-reflect": lambda: nn.Conv2d(4, 5, 3, stride=2, padding=1, padding_mode="reflect"),
    "depthwise-circular": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4, padding_mode="circular"),
}


def conv_network(name: str) -> Sandwich:
    torch.manual_seed(0)
    return seeded(Sandwich(nn.ReLU(), post=CONVS[name]()), seed=1)


def gamma(conv: nn.Conv2d, value: float) -> Callable[[Tensor], Tensor]:
    """The conv's own forward with ρ(w) = w + γw⁺ and ρ(b) = b + γb⁺."""
    params = {name: p + value * p.clamp(min=0) for name, p in conv.named_parameters()}
    return lambda x: functional_call(conv, params, (x,))


@pytest.mark.parametrize("name", CONVS)
def test_special_convolutions_by_hand(name):
    model = conv_network(name)
    a = F.relu(model.pre(X))
    explanation = Explainer(model, "zero").explain(X)
    torch.testing.assert_close(explanation.logits, model(X), rtol=1e-5, atol=1e-6)
    expected = lrp0_through(model.post, a, explanation.relevances["post"])
    assert_close(explanation.relevances["op"], expected, ALGEBRA, f"{name}: LRP-0 at the conv's input")
    if model.post.padding_mode != "zeros" and model.post.padding != "same":  # zero padding would be told apart
        zero_padded = nn.Conv2d(model.post.in_channels, model.post.out_channels, model.post.kernel_size,
                                model.post.stride, model.post.padding, model.post.dilation, model.post.groups)
        zero_padded.load_state_dict(model.post.state_dict())
        assert_discriminates(expected, lrp0_through(zero_padded, a, explanation.relevances["post"]))
    # LRP-γ (γ = 0.25) on the conv: z and the transpose with the conv's own padding
    explanation = Explainer(model, get_composite("zero", {"post": Gamma(0.25)})).explain(X)
    forward = gamma(model.post, 0.25)
    z = forward(a)
    s = explanation.relevances["post"] / (z + 1e-6 * torch.where(z >= 0, 1.0, -1.0))  # γ's stabiliser: 1e-6
    x = a.clone().requires_grad_()
    with torch.enable_grad():
        c, = torch.autograd.grad(forward(x), x, s)
    expected = a * c
    assert_close(explanation.relevances["op"], expected, ALGEBRA, f"{name}: LRP-γ at the conv's input")


@pytest.mark.parametrize("name", ["reflect", "circular", "replicate", "same-4"])
def test_special_convolutions_conserve(name):
    model = zero_biases(conv_network(name))
    explanation = Explainer(model, "zero").explain(X)
    assert abs(float(explanation.relevances["input"].sum() / explanation.logits.max()) - 1) <= CONSERVATION
    _, expected = modified_gradient_lrp0(model, X)
    assert_close(explanation.relevances["input"], expected, REFERENCE, "input relevance vs modified gradient")


# --- sums and concatenations ----------------------------------------------------------------------------------


class Residual(nn.Module):
    """pre → relu → branch(h) [+ other(h)] + h (out of place or in place) → post → relu → flatten → head."""

    def __init__(self, how: str):
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.other = nn.Conv2d(4, 4, 1)
        self.post = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Linear(5 * 64, 3)
        self.how = how

    def summands(self, x):
        h = self.relu(self.pre(x))
        return (h, self.branch(h), self.other(h)) if self.how == "three" else (h, self.branch(h))

    def forward(self, x):
        h = self.relu(self.pre(x))
        if self.how == "in place":
            out = self.branch(h)
            out += h
        elif self.how == "torch.add":
            out = torch.add(self.branch(h), h)
        elif self.how == "three":
            out = h + self.branch(h) + self.other(h)
        else:
            out = self.branch(h) + h
        return self.head(F.relu(self.post(out)).flatten(1))


@pytest.mark.parametrize("how", ["+", "in place", "torch.add", "three"])
def test_residual_sum_by_hand(how):
    """Each summand gets ``x_i / Σx · R`` (stabiliser 0 under "zero")."""
    model = seeded(Residual(how), seed=4)
    explanation = Explainer(model, "zero").explain(X)
    torch.testing.assert_close(explanation.logits, model(X), rtol=1e-5, atol=1e-6)
    parts = model.summands(X)
    total = sum(parts)
    relevance = lrp0_through(model.post, total, explanation.relevances["post"])
    shares = [p * safe_divide(relevance, total) for p in parts]
    assert_close(explanation.relevances["branch"], shares[1], ALGEBRA, "the branch's share")
    if how == "three":
        assert_close(explanation.relevances["other"], shares[2], ALGEBRA, "the third summand's share")
    # at h: its own share plus what comes back through the branch (and the third summand)
    expected = shares[0] + lrp0_through(model.branch, parts[0], shares[1])
    if how == "three":
        expected = expected + lrp0_through(model.other, parts[0], shares[2])
    assert_close(explanation.relevances["relu"], expected, ALGEBRA, "relevance at h")
    assert_discriminates(shares[1], relevance / len(parts), relevance)
    zeroed = zero_biases(model)
    zero = Explainer(zeroed, "zero").explain(X)
    assert abs(float(zero.relevances["input"].sum() / zero.logits.max()) - 1) <= CONSERVATION
    _, reference = modified_gradient_lrp0(zeroed, X)
    assert_close(zero.relevances["input"], reference, REFERENCE, "input relevance vs modified gradient")


class Joined(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 2, 3, padding=1)
        self.right = nn.Conv2d(4, 3, 1)
        self.post = nn.Conv2d(5, 5, 3, padding=1)
        self.head = nn.Linear(5 * 64, 3)

    def forward(self, x):
        h = F.relu(self.pre(x))
        return self.head(F.relu(self.post(torch.cat([self.left(h), self.right(h)], 1))).flatten(1))


def test_concatenation_splits():
    model = seeded(Joined(), seed=5)
    explanation = Explainer(model, "zero").explain(X)
    h = F.relu(model.pre(X))
    joined = torch.cat([model.left(h), model.right(h)], 1)
    relevance = lrp0_through(model.post, joined, explanation.relevances["post"])
    assert_close(explanation.relevances["left"], relevance[:, :2], ALGEBRA, "left slice")
    assert_close(explanation.relevances["right"], relevance[:, 2:], ALGEBRA, "right slice")


def test_the_formulas_on_numbers():
    """The test's own formulas on numbers: the mean rule on a = (1, 3) (mean 2) with R = 8 gives a/(2·2)·8 =
    (2, 6); nearest ×2 gives each input its block's relevance."""
    a = torch.tensor([[[[1.0, 3.0]]]])
    assert mean_rule(False)(a, nn.Identity(), torch.tensor([[8.0]])).flatten().tolist() == [2.0, 6.0]
    assert nearest_twice_rule(a, nn.Identity(), F.interpolate(a, scale_factor=2)).flatten().tolist() == [4.0, 12.0]
    shuffled = channel_shuffle(torch.arange(4.0)[None, :, None, None], 2)
    assert shuffled_rule(torch.zeros(1, 4, 1, 1), nn.Identity(), shuffled).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
