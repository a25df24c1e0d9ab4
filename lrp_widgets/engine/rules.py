"""LRP rules: small declarative classes that turn one layer of a stored forward pass into a
relevance propagator.

Every rule for a Conv2d or Linear layer runs the paper's four steps with modified parameters
ρ(w), ρ(b) (and, for z^B, modified inputs):

    z = Σ_t sign_t · f(input_t; ρ_t(w), ρ_t(b))    (forward)
    s = R / stabilize(z)                            (divide)
    c_t = f_tᵀ(s)                                   (backward: transposed conv / matmul)
    R_in = Σ_t sign_t · input_t · c_t               (multiply)

``stabilize(z) = z + ε·sign(z)`` with sign(0) = +1 — the convention of zennit and Captum.

>>> import torch
>>> layer = torch.nn.Linear(2, 1, bias=False).requires_grad_(False)
>>> _ = layer.weight.data.copy_(torch.tensor([[1.0, 3.0]]))
>>> a = torch.tensor([[1.0, 1.0]])
>>> propagate = Epsilon(0.0).bind(layer, a, layer(a))
>>> propagate(torch.tensor([[8.0]]))
tensor([[2., 6.]])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError

ParamModifier = Callable[[Tensor, str], Tensor]


class Propagator(Protocol):
    """Relevance at a layer's output → relevance at its input (a tuple, one per input, for additions,
    concatenations and gates; ``None`` for an input that gets none).

    ``image`` selects one sample of the stored batch (the relevance batch then holds several
    conditions of that one image); ``channels`` says the relevance of row n is non-zero only
    in output channel ``channels[n]``, which lets linear layers skip the other channels.
    """

    def __call__(self, relevance: Tensor, image: int | None = None,
                 channels: Tensor | None = None) -> Tensor | tuple[Tensor | None, ...]: ...


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign(z)``, with sign(0) taken as +1 (as zennit)."""
    if epsilon == 0:
        return z
    # z + 0.0 turns -0.0 into +0.0: both zeros count as positive, as zennit's z >= 0
    return torch.copysign(torch.tensor(epsilon, dtype=z.dtype, device=z.device), z + 0.0).add_(z)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (the LRP-0 convention)."""
    return (numerator / denominator).nan_to_num_(0.0, 0.0, 0.0)  # x/0 and 0/0 are the only infinities and NaNs


def _signed_sum(parts: list[tuple[float, Tensor]]) -> Tensor:
    """``Σ sign·t`` without extra passes; the tensors must be fresh (they are added to in place)."""
    (sign, total), *rest = parts
    if sign < 0:
        total = total.neg_()
    for sign, t in rest:
        total = total.add_(t) if sign > 0 else total.sub_(t)
    return total


def keep_channels(relevance: Tensor, channels: Tensor) -> Tensor:
    """A copy of ``relevance`` with only channel ``channels[n]`` of row n kept, the others zero."""
    rows = torch.arange(relevance.shape[0], device=relevance.device)
    kept = torch.zeros_like(relevance)
    kept[rows, channels] = relevance[rows, channels]
    return kept


def _select(t: Tensor, image: int | None) -> Tensor:
    return t if image is None or t.shape[0] == 1 else t[image:image + 1]


class Rule:
    """Base class: ``bind`` a layer, its stored input and output to a :class:`Propagator`."""

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        raise NotImplementedError


@dataclass(frozen=True)
class Term:
    """One summand of a linear rule: ``sign · f(input; modify(w), modify(b))``."""

    sign: float
    input: Tensor
    modify: ParamModifier


def _identity(param: Tensor, name: str) -> Tensor:
    return param


def _forward(layer: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's own forward with other parameters: padding modes, ``padding="same"``, dilation and groups
    are the module's."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, bias)
    return F.linear(x, weight, bias)


def _plain(layer: nn.Conv2d) -> bool:
    """A convolution whose transpose is ``conv_transpose2d``: zero padding given in numbers."""
    return layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)


def channel_sparse(layer: nn.Module) -> bool:
    """Whether :func:`transpose_channels` applies (one output channel per row, without the others)."""
    return isinstance(layer, nn.Linear) or (layer.groups == 1 and _plain(layer))


def transpose(layer: nn.Module, s: Tensor, weight: Tensor, input_shape: Sequence[int]) -> Tensor:
    """The transpose of the layer's linear map applied to ``s`` (dense)."""
    if isinstance(layer, nn.Linear):
        return s @ weight
    if not _plain(layer):  # reflected, circular or "same" padding: the gradient of the module's own forward
        x = s.new_zeros(s.shape[0], *input_shape[1:]).requires_grad_()
        with torch.enable_grad():
            return torch.autograd.grad(layer._conv_forward(x, weight, None), x, s)[0]
    if layer.kernel_size == (1, 1) and layer.padding == (0, 0) and layer.groups == 1:
        # a pointwise convolution (strided: a downsampling shortcut) is a matmul at the sampled positions, several
        # times faster on CPU than conv_transpose2d's strided kernel
        dense = F.conv2d(s, weight.transpose(0, 1))
        if layer.stride == (1, 1):
            return dense
        c = s.new_zeros(s.shape[0], *input_shape[1:])
        c[:, :, ::layer.stride[0], ::layer.stride[1]] = dense
        return c
    return F.conv_transpose2d(s, weight, None, layer.stride, layer.padding,
                              _output_padding(layer, s.shape[-2:], input_shape[-2:]), layer.groups, layer.dilation)


def gradient(function: Callable[[Tensor], Tensor], a: Tensor, v: Tensor, image: int | None = None) -> Tensor:
    """``Jᵀv`` for a linear ``function`` (pooling, resampling, …) at the stored input ``a``, row by row of ``v``."""
    ai = _select(a, image)
    x = ai.detach().expand(v.shape[0], *ai.shape[1:]).requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(function(x), x, v)[0]


def _output_padding(layer: nn.Conv2d, out_size: Sequence[int], in_size: Sequence[int]) -> tuple[int, int]:
    """What a transposed convolution must add to give back the input size."""
    return tuple(size - ((out - 1) * st - 2 * p + d * (k - 1) + 1) for size, out, k, st, p, d in
                 zip(in_size, out_size, layer.kernel_size, layer.stride, layer.padding, layer.dilation))


def _flippable(layer: nn.Conv2d) -> bool:
    return (layer.groups == 1 and set(layer.stride) == {1} and set(layer.dilation) == {1}
            and isinstance(layer.padding, tuple) and all(k - 1 - p >= 0 for k, p in zip(layer.kernel_size, layer.padding)))


def transpose_channels(layer: nn.Module, s: Tensor, weight: Tensor, channels: Tensor,
                       input_shape: Sequence[int]) -> Tensor:
    """Transpose of the layer for rows whose ``s`` lives in one output channel each.

    ``s`` has shape (N, H, W) (conv) or (N,) (linear): the value of channel ``channels[n]``. For a
    stride-1 conv each row is a single-input-channel correlation with its flipped kernel, done for all
    rows at once as one grouped convolution (group n: 1 input channel → C_in outputs).
    """
    n = s.shape[0]
    rows = weight[channels]
    if isinstance(layer, nn.Linear):
        return s[:, None] * rows
    h_in, w_in = input_shape[-2:]
    if _flippable(layer):
        padding = tuple(k - 1 - p for k, p in zip(layer.kernel_size, layer.padding))
        kernels = rows.flip(2, 3).reshape(-1, 1, *layer.kernel_size)  # (N·C_in, 1, kh, kw)
        return F.conv2d(s[None], kernels, None, 1, padding, 1, n).reshape(n, -1, h_in, w_in)
    c = F.conv_transpose2d(s.reshape(1, n, *s.shape[-2:]), rows, None, layer.stride, layer.padding,
                           _output_padding(layer, s.shape[-2:], (h_in, w_in)), n, layer.dilation)
    return c.reshape(n, -1, h_in, w_in)


def _stacked(layer: nn.Module, params: list, n: int) -> tuple[list, int]:
    """Several terms as one: ``Σ sign_t·f(x_t; w_t)`` is ``f`` of the inputs stacked along channels with the
    signed weights stacked alike — one convolution and one transpose instead of one per term (z^B: 3× faster).
    Returns the parameters and how many inputs were stacked (1: left as they were, for grouped convolutions)."""
    if len(params) == 1 or getattr(layer, "groups", 1) != 1:
        return params, 1
    dim = 1 if isinstance(layer, nn.Conv2d) else -1
    x = torch.cat([x.expand(n, *x.shape[1:]) for _, x, _, _ in params], dim)
    w = torch.cat([w * sign for sign, _, w, _ in params], 1)
    biases = [b * sign for sign, _, _, b in params if b is not None]
    return [(1.0, x, w, sum(biases) if biases else None)], len(params)


def _unstack(layer: nn.Module, relevance: Tensor, parts: int) -> Tensor:
    """The relevance of stacked inputs (:func:`_stacked`) summed back to the layer's own input."""
    if parts == 1:
        return relevance
    if isinstance(layer, nn.Conv2d):
        return relevance.unflatten(1, (parts, -1)).sum(1)
    return relevance.unflatten(-1, (parts, -1)).sum(-2)


class LinearRule(Rule):
    """A rule for Conv2d / Linear layers, described by its terms and its stabiliser."""

    stabilizer: float = 1e-6

    def terms(self, a: Tensor) -> list[Term]:
        raise NotImplementedError

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"{type(self).__name__} applies to Conv2d and Linear layers, not {type(layer).__name__}")
        terms = self.terms(a)
        params = [(t.sign, t.input, t.modify(layer.weight, "weight"),
                   None if layer.bias is None else t.modify(layer.bias, "bias")) for t in terms]
        parts = 1
        if len(terms) == 1 and terms[0].modify is _identity and terms[0].input is a:
            # the forward output is exactly this rule's z; copied, since a following ReLU rectifies it in place
            z = out if self.stabilizer > 0 else out.clone()
        else:
            params, parts = _stacked(layer, params, a.shape[0])
            z = _signed_sum([(sign, _forward(layer, x, w, b)) for sign, x, w, b in params])
        z = stabilize(z, self.stabilizer)
        divide = torch.div if self.stabilizer > 0 else safe_divide  # a stabilised z is never 0
        sparse = channel_sparse(layer)

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> Tensor:
            zi = _select(z, image)
            if channels is not None:
                rows = torch.arange(relevance.shape[0], device=relevance.device)
                if sparse:
                    zc = zi[0, channels] if zi.shape[0] == 1 else zi[rows, channels]
                    s = divide(relevance[rows, channels], zc)
                    return _unstack(layer, _signed_sum([
                        (sign, transpose_channels(layer, s, w, channels, (s.shape[0], *x.shape[1:])).mul_(
                            _select(x, image))) for sign, x, w, _ in params]), parts)
                relevance = keep_channels(relevance, channels)  # grouped or padded: the dense transpose of one channel
            s = divide(relevance, zi)
            return _unstack(layer, _signed_sum([(sign, transpose(layer, s, w, (s.shape[0], *x.shape[1:])).mul_(
                _select(x, image))) for sign, x, w, _ in params]), parts)

        # what Explanation.nbytes counts: z, the inputs and modified weights (the model's own are the model's)
        propagate.stored = (z, *(x for _, x, _, _ in params), *(w for _, _, w, _ in params if w is not layer.weight))
        return propagate


@dataclass(frozen=True)
class Epsilon(LinearRule):
    """LRP-ε: ``z = ε·sign(z) + Σ a·w + b``. ε = 0 is LRP-0 (:class:`Zero`).

    The default ε = 0.25 is the paper's (its upper layers); zennit's ``Epsilon`` defaults to 1e-6, which
    the ``epsilon-gamma-box`` and ``epsilon-plus-flat`` presets use on linear layers, as zennit does.
    """

    epsilon: float = 0.25

    @property
    def stabilizer(self) -> float:  # type: ignore[override]
        return self.epsilon

    def terms(self, a: Tensor) -> list[Term]:
        return [Term(1.0, a, _identity)]


@dataclass(frozen=True)
class Zero(Epsilon):
    """LRP-0: ``z = Σ a·w + b`` (0/0 counts as 0)."""

    epsilon: float = field(default=0.0, init=False)


@dataclass(frozen=True)
class Gamma(LinearRule):
    """LRP-γ: ``ρ(w) = w + γ·w⁺`` on weights and bias; γ → ∞ approaches z⁺."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def terms(self, a: Tensor) -> list[Term]:
        gamma = self.gamma
        return [Term(1.0, a, lambda p, _: p + gamma * p.clamp(min=0))]


@dataclass(frozen=True)
class ZPlus(LinearRule):
    """The z⁺ formula printed in the paper: only positive contributions ``a⁺·w⁺ + a⁻·w⁻`` (+ b⁺)."""

    stabilizer: float = 1e-6

    def terms(self, a: Tensor) -> list[Term]:
        return [Term(1.0, a.clamp(min=0), lambda p, _: p.clamp(min=0)),
                Term(1.0, a.clamp(max=0), lambda p, name: p.clamp(max=0) if name == "weight" else torch.zeros_like(p))]


@dataclass(frozen=True)
class Flat(LinearRule):
    """Flat: relevance spread evenly over each output's receptive field (weights and inputs taken as 1, no
    bias), as zennit's ``Flat``; for the first layer of ``epsilon-plus-flat``."""

    stabilizer: float = 1e-6

    def terms(self, a: Tensor) -> list[Term]:
        return [Term(1.0, torch.ones_like(a[:1]),
                     lambda p, name: torch.ones_like(p) if name == "weight" else torch.zeros_like(p))]


@dataclass(frozen=True, eq=False)
class ZBox(LinearRule):
    """z^B for the input layer, with pixel bounds ``low ≤ x ≤ high`` (per channel or per pixel).

    ``z = Σ x·w − l·w⁺ − h·w⁻``; the bias terms cancel (as in zennit). ``None`` bounds: the input's own
    range per channel (for inputs whose pixel range is not known).
    """

    low: Tensor | float | None
    high: Tensor | float | None
    stabilizer: float = 1e-6

    def terms(self, a: Tensor) -> list[Term]:
        if self.low is None or self.high is None:
            low, high = (_bound(v, a) for v in (a.amin((0, 2, 3)), a.amax((0, 2, 3))))
        else:
            low, high = (_bound(v, a) for v in (self.low, self.high))
        return [Term(1.0, a, _identity),
                Term(-1.0, low, lambda p, _: p.clamp(min=0)),
                Term(-1.0, high, lambda p, _: p.clamp(max=0))]


def _bound(value: Tensor | float, a: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    if t.dim() == 1 and a.dim() == 4:
        if t.numel() not in (1, a.shape[1]):
            raise ModelError(f"z^B has bounds for {t.numel()} channels but the input has {a.shape[1]}: give the "
                             "model's mean and std (one value per channel)")
        t = t[:, None, None]
    return t.expand(a.shape[1:]).unsqueeze(0)


class Pass(Rule):
    """Relevance passes unchanged: the identity rule for element-wise activations (ReLU, SiLU, GELU,
    Hardswish …, as AttnLRP), dropout, a product with a constant."""

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        return lambda relevance, image=None, channels=None: relevance


class Absorb(Rule):
    """A constant (a parameter the forward reads): the relevance it gets stays there, as a bias's does."""

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        return lambda relevance, image=None, channels=None: ()


class Moves(Rule):
    """Operations that only move values (view, flatten, permute, transpose, channel shuffle, chunk, slicing):
    relevance moves back with them, each output's to the input it copies (conserving, exact).

    The map is found by running the operation on the input's element indices, once per input shape.
    """

    def __init__(self):
        self.maps: dict[tuple, tuple[str, Tensor | None]] = {}

    def __repr__(self) -> str:
        return "Moves()"

    def bind(self, layer: Callable[[Tensor], Tensor], a: Tensor, out: Tensor) -> Propagator:
        per_image = a[0].numel()
        key = (tuple(a.shape), tuple(out.shape), a.device)
        if key not in self.maps:  # a parameter expanded over the batch (a class token): each image's copy as is
            broadcast = a.dim() > 0 and a.shape[0] == 1 < out.shape[0] and out.shape[1:] == a.shape[1:]
            self.maps[key] = ("same", None) if broadcast else _index_map(layer, a, out)
        kind, index = self.maps[key]

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> Tensor:
            n = relevance.shape[0]
            if kind == "same":
                return relevance.reshape(n, *a.shape[1:])
            if kind == "permuted":  # each input copied once: gather through the inverse permutation
                return relevance.reshape(n, -1).index_select(1, index).reshape(n, *a.shape[1:])
            flat = relevance.new_zeros(n, per_image)
            flat.scatter_add_(1, index.expand(n, -1), relevance.reshape(n, -1))
            return flat.reshape(n, *a.shape[1:])

        return propagate


def _index_map(layer: Callable[[Tensor], Tensor], a: Tensor, out: Tensor) -> tuple[str, Tensor | None]:
    """How an operation moves one image's elements: ``("same", None)`` (a view), ``("permuted", inverse)``
    (each input once: the input position of each output), or ``("moved", index)`` (the input each output
    copies: slices, repeats)."""
    per_image = a[0].numel()
    moved = _moved(layer, a[:1], out)  # one image's indices, unless the operation needs the whole batch
    if moved is None:
        moved = _moved(layer, a, out)
    first = moved[0].flatten() if moved is not None else None
    if out.dim() and a.dim() and out.shape[0] != a.shape[0]:
        raise ModelError(f"an operation moves the batch dimension (output shape {tuple(out.shape)} from "
                         f"{tuple(a.shape)}): LRP here keeps the images first (e.g. nn.MultiheadAttention(batch_first="
                         "True) instead of sequence-first tensors)")
    if first is None or (first.numel() and not 0 <= int(first.min()) <= int(first.max()) < per_image):
        raise ModelError(f"an operation moves values between the images of a batch (output shape "
                         f"{tuple(out.shape)} from {tuple(a.shape)}): LRP here explains each image on its own")
    if first.numel() == per_image:
        order = torch.arange(per_image, device=a.device)
        if torch.equal(first, order):
            return "same", None
        inverse = torch.empty_like(first).scatter_(0, first, order)
        if torch.equal(inverse[first], order):  # transpose, permute, channel shuffle
            return "permuted", inverse
    return "moved", first


def _moved(operation: Callable[[Tensor], Tensor], a: Tensor, out: Tensor) -> Tensor | None:
    """The operation applied to the element indices of ``a`` (``None`` if it fails or gives another shape
    than the stored output's per image)."""
    for dtype in (torch.long, torch.float64):  # some operations have no integer kernels
        try:
            moved = operation(torch.arange(a.numel(), device=a.device, dtype=dtype).reshape(a.shape))
        except (RuntimeError, TypeError):
            continue
        if isinstance(moved, Tensor) and moved.shape[1:] == out.shape[1:] and moved.shape[0] == a.shape[0]:
            return moved.long()
    return None


class FrozenScale(Rule):
    """Batch norm and layer norm with their scale ``1/σ`` held constant (as AttnLRP/LXT do): then the layer
    is linear in x, ``y = w·(x − μ)/σ + b`` (batch norm: μ and σ the running statistics; layer norm: μ the
    mean of x over the normalised dimensions, σ frozen at its value), and LRP-ε on that linear map gives
    ``R_in = x · Jᵀ(R / stabilize(y))``. Conserving when the bias terms are zero.
    """

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def __repr__(self) -> str:
        return f"FrozenScale(stabilizer={self.stabilizer})"

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        z = stabilize(out, self.stabilizer) if self.stabilizer > 0 else out.clone()
        divide = torch.div if self.stabilizer > 0 else safe_divide
        sigma = self.sigma(layer, a)

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> Tensor:
            v = divide(relevance, _select(z, image))
            per_image = sigma if isinstance(layer, nn.modules.batchnorm._BatchNorm) else _select(sigma, image)
            return self.transpose(layer, a, v, image, per_image).mul_(_select(a, image))

        propagate.stored = (z, sigma)
        return propagate

    @staticmethod
    def sigma(layer: nn.Module, a: Tensor) -> Tensor:
        """The frozen σ: batch norm's from its running variance (per channel), layer norm's per position."""
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            return torch.sqrt(layer.running_var + layer.eps)
        dims = tuple(range(-len(layer.normalized_shape), 0))
        return torch.sqrt(a.var(dims, unbiased=False, keepdim=True) + layer.eps)

    @staticmethod
    def transpose(layer: nn.Module, a: Tensor, v: Tensor, image: int | None = None,
                  sigma: Tensor | None = None) -> Tensor:
        """``Jᵀv``: the transpose of the layer's linear map with σ frozen."""
        sigma = FrozenScale.sigma(layer, _select(a, image)) if sigma is None else sigma
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            weight = layer.weight if layer.weight is not None else torch.ones_like(layer.running_var)
            return v * (weight / sigma).reshape(-1, *(1,) * (v.dim() - 2))
        dims = tuple(range(-len(layer.normalized_shape), 0))
        u = v * layer.weight if layer.weight is not None else v
        return (u - u.mean(dims, keepdim=True)).div_(sigma)


class WinnerTakesAll(Rule):
    """Max-pooling: each window's relevance goes to the input that won the max (the gradient's routing).

    Needs the pooling switches: bind with ``out = (output, indices)``.
    """

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        indices = out[1]
        return lambda relevance, image=None, channels=None: unpool(relevance, _select(indices, image), a.shape)


def unpool(values: Tensor, switches: Tensor, input_shape: Sequence[int]) -> Tensor:
    """Max-unpooling: each window's value goes to the input position its switch names; values of
    overlapping windows add up. ``switches`` (1 or N, C, H, W) are the indices of the forward pass."""
    n = values.shape[0]
    flat = values.new_zeros(n, input_shape[1], input_shape[2] * input_shape[3])
    flat.scatter_add_(2, switches.flatten(2).long().expand(n, -1, -1), values.flatten(2))
    return flat.reshape(n, *input_shape[1:])


@dataclass(frozen=True)
class Proportional(Rule):
    """A linear map with non-negative weights (average pooling, the mean over space, nearest or bilinear
    resampling) as LRP-ε on it: ``R_in = a · Jᵀ(R / stabilize(f(a)))``; for an average pool each input gets
    ``a_i / Σ a · R`` of its windows.

    The rule for AvgPool2d, AdaptiveAvgPool2d, ``mean``, ``F.interpolate``/Upsample, and the "average" option
    for MaxPool2d.
    """

    stabilizer: float = 1e-6

    def bind(self, layer: nn.Module, a: Tensor, out: Tensor) -> Propagator:
        pool = _as_average_pool(layer)
        z = pool(a) if isinstance(layer, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) else out
        z = stabilize(z, self.stabilizer) if self.stabilizer > 0 else z
        divide = torch.div if self.stabilizer > 0 else safe_divide

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> Tensor:
            return gradient(pool, a, divide(relevance, _select(z, image)), image).mul_(_select(a, image))

        propagate.stored = (z,)
        return propagate


def _as_average_pool(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    if isinstance(layer, nn.MaxPool2d):
        return lambda x: F.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                                      count_include_pad=True)
    if isinstance(layer, nn.AdaptiveMaxPool2d):
        return lambda x: F.adaptive_avg_pool2d(x, layer.output_size)
    return layer


@dataclass(frozen=True)
class Norm(Rule):
    """The residual addition ``y = Σ x_i``: each summand gets ``x_i / Σx · R`` (stabilised), as zennit's
    ``Norm`` rule on its ``Sum`` module. A subtraction ``a − b`` is the sum of ``a`` and ``−b`` (the
    module's ``signs``)."""

    stabilizer: float = 1e-6

    def bind(self, layer: nn.Module, a: Sequence[Tensor], out: Tensor) -> Propagator:
        z = stabilize(out, self.stabilizer) if self.stabilizer > 0 else out.clone()
        divide = torch.div if self.stabilizer > 0 else safe_divide

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> tuple[Tensor, ...]:
            s = divide(relevance, _select(z, image))
            return tuple(s * _select(x, image) if sign > 0 else -s * _select(x, image) for x, sign in zip(a, signs))

        signs = getattr(layer, "signs", (1.0,) * len(a))

        propagate.stored = (z,)
        return propagate


class Split(Rule):
    """Concatenation: each input gets its slice of the relevance."""

    def bind(self, layer: nn.Module, a: Sequence[Tensor], out: Tensor) -> Propagator:
        sizes = [x.shape[layer.dim] for x in a]
        return lambda relevance, image=None, channels=None: tuple(relevance.split(sizes, layer.dim))


class SignalTakesAll(Rule):
    """A gate ``y = signal · g`` (g broadcast over the signal, as in squeeze-and-excitation, or a constant
    such as a layer scale): the signal gets all the relevance, the gate none."""

    def bind(self, layer: nn.Module, a: Sequence[Tensor], out: Tensor) -> Propagator:
        signal = signal_index(a, out, getattr(layer, "signal", None))
        return lambda relevance, image=None, channels=None: tuple(
            relevance if i == signal else None for i in range(len(a)))


def signal_index(inputs: Sequence[Tensor], output: Tensor, hint: int | None = None) -> int:
    """Which factor of a product is the signal (the other, broadcast over it, is the gate); ``hint``: the one
    the network's structure names (the other comes from a sigmoid or is a parameter), for equal shapes."""
    if not all(isinstance(x, Tensor) for x in inputs):
        raise ModelError(f"a product of {' and '.join(type(x).__name__ for x in inputs)} is not a gate: LRP here "
                         "cannot split its relevance")
    signals = [i for i, x in enumerate(inputs) if x.shape[1:] == output.shape[1:]]
    if len(signals) > 1 and hint is not None:
        return hint
    if len(signals) != 1:
        shapes = " and ".join(str(tuple(x.shape)) for x in inputs)
        raise ModelError(f"a product of tensors of shapes {shapes} is not a gate (a signal times a factor broadcast "
                         "over it): LRP here cannot split its relevance")
    return signals[0]


class FrozenAttention(Rule):
    """Attention with its weights held constant (CP-LRP, what LXT applies to torchvision's ViT): the output is
    then an affine map of the values, ``out = W_o·(A·(W_v·v + b_v)) + b_o``, and LRP-ε on that map gives
    ``R_v = v · Jᵀ(R / stabilize(out))``; the queries and keys (through A) get none. ``layer`` is an attention
    step's module (:class:`~lrp_widgets.engine.operations.Attention`): ``weights(q, k)`` and ``values(v, A)``.
    """

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def __repr__(self) -> str:
        return f"FrozenAttention(stabilizer={self.stabilizer})"

    def bind(self, layer: nn.Module, a: Sequence[Tensor], out: tuple[Tensor, Tensor]) -> Propagator:
        (query, key, value), (out, weights) = a, out  # the weights the forward pass computed
        z = stabilize(out, self.stabilizer) if self.stabilizer > 0 else out.clone()
        divide = torch.div if self.stabilizer > 0 else safe_divide

        def propagate(relevance: Tensor, image: int | None = None, channels: Tensor | None = None) -> tuple:
            v, held = divide(relevance, _select(z, image)), _select(weights, image)
            x = _select(value, image).detach().expand(v.shape[0], *value.shape[1:]).requires_grad_()
            with torch.enable_grad():
                g = torch.autograd.grad(layer.values(x, held), x, v)[0]
            return None, None, g.mul_(x.detach())

        propagate.stored = (z, weights)
        return propagate


#: Rules by name, for configuration from strings (``"gamma"``, ``"epsilon"`` …).
RULES: dict[str, Callable[..., Rule]] = {
    "epsilon": Epsilon, "zero": Zero, "gamma": Gamma, "zplus": ZPlus, "zbox": ZBox, "flat": Flat, "pass": Pass,
    "winner": WinnerTakesAll, "proportional": Proportional, "norm": Norm, "frozen-scale": FrozenScale,
    "frozen-attention": FrozenAttention,
}
