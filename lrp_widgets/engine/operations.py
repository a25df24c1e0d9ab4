"""The operations the engine can explain: one registry entry each.

An :class:`Operation` says how torch.fx shows the operation (module types, functions, Tensor methods), its
role, how it runs in eval semantics where that differs from the traced call, its default LRP rule and its
deconvnet step. Tracing (:mod:`.network`), composites, propagation, deconvolution and the error message
for what is not supported all read :data:`OPERATIONS`. Adding an operation is one entry:

>>> entry = Operation("hardswish", "activation", modules=(nn.Hardswish,), functions=(F.hardswish,),
...                   rule=identity, deconv=rectify)
>>> entry.role, entry.words
('activation', 'Hardswish')

(``hardswish`` is already an entry; :func:`register` adds one at run time.)
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .rules import (Absorb, FrozenAttention, FrozenScale, Moves, Norm, Pass, Proportional, Rule, SignalTakesAll, Split,
                    WinnerTakesAll, gradient, signal_index, keep_channels, transpose, transpose_channels, unpool)

if TYPE_CHECKING:
    from .composites import Composite

#: What an operation is to LRP.
ROLES = ("weighted", "activation", "normalisation", "pooling", "sum", "concat", "gate", "attention", "reshape",
         "identity")


class Unsupported(Exception):
    """An operation in a configuration no entry covers (the reason in words)."""


@dataclass(frozen=True)
class Call:
    """One fx node as an entry sees it: its module (a module call), arguments and the model."""

    node: fx.Node
    model: nn.Module
    module: nn.Module | None = None

    @property
    def args(self) -> tuple:
        return self.node.args

    @property
    def kwargs(self) -> dict:
        return self.node.kwargs

    def argument(self, index: int, name: str, default: Any = None) -> Any:
        """A positional-or-keyword argument; a parameter or buffer (get_attr) is resolved to its tensor."""
        value = self.args[index] if len(self.args) > index else self.kwargs.get(name, default)
        if isinstance(value, fx.Node):
            if value.op != "get_attr":
                raise Unsupported(f"its argument '{name}' is computed from the input")
            value = _attribute(self.model, str(value.target))
        return value


def _attribute(model: nn.Module, path: str) -> Any:
    value: Any = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Backstep:
    """What a deconvnet step reads: the step's module, its stored inputs and output, the forward pass's
    state (max-pool switches), the step as a function of its first input, and the image."""

    module: nn.Module | None
    inputs: Sequence[Tensor]
    output: Tensor
    state: Any
    function: Callable[[Tensor], Tensor]
    image: int


@dataclass(frozen=True)
class Operation:
    """One kind of operation. ``build`` turns an fx call into the step's module (raise :class:`Unsupported`
    for a configuration LRP here cannot pass); ``inputs`` picks the tensors relevance flows to; ``run`` is the
    eval-semantics forward where it differs from the traced call (returning ``(output, state)`` where the
    rule and the deconvnet need more, e.g. max-pool switches); ``rule`` gives the default LRP rule for a
    composite (``None`` for weighted layers: the composite's schedule decides); ``deconv`` is the deconvnet
    step; ``in_place`` the in-place forward used when nothing else reads the input."""

    name: str
    role: str
    modules: tuple[type, ...] = ()
    functions: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()
    build: Callable[[Call], nn.Module | None] = lambda call: call.module
    inputs: Callable[[fx.Node], Sequence[fx.Node]] = lambda node: node.all_input_nodes[:1]
    run: Callable[..., Any] | None = None
    rule: Callable[["Composite"], Rule] | None = None
    deconv: Callable[[Backstep, Tensor, "Tensor | None"], tuple] | None = None
    in_place: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown role '{self.role}': one of {', '.join(ROLES)}")

    @property
    def words(self) -> str:
        """How the error message names it."""
        return "/".join(m.__name__ for m in self.modules) or self.name


# --- default rules ---------------------------------------------------------------------------------------


def identity(composite: "Composite") -> Rule:
    """Relevance passes unchanged: element-wise activations (the identity rule of AttnLRP), dropout."""
    return Pass()


def proportional(composite: "Composite") -> Rule:
    return Proportional(composite.stabilizer)


def _frozen_scale(composite: "Composite") -> Rule:
    return FrozenScale(composite.stabilizer)


def _norm(composite: "Composite") -> Rule:
    return Norm(composite.stabilizer)


def _max_pool_rule(composite: "Composite") -> Rule:
    return WinnerTakesAll() if composite.maxpool == "winner" else Proportional(composite.stabilizer)


# --- deconvnet steps --------------------------------------------------------------------------------------


def rectify(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    """A ReLU-like activation: the deconvnet rectifies the signal (Zeiler & Fergus)."""
    return (signal.relu(),)


def passes(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return (signal,)


def _weighted_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    """The transpose with the layer's own weights, no bias."""
    module, shape = step.module, (signal.shape[0], *step.inputs[0].shape[1:])
    if keep is not None and (isinstance(module, nn.Linear) or module.groups == 1):
        rows = torch.arange(signal.shape[0], device=signal.device)
        return (transpose_channels(module, signal[rows, keep], module.weight, keep, shape),)
    signal = signal if keep is None else keep_channels(signal, keep)
    return (transpose(module, signal, module.weight, shape),)


def _linear_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    """A linear map: its transpose (the gradient)."""
    return (gradient(step.function, step.inputs[0], signal, step.image),)


def _moves_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return (Moves().bind(step.function, step.inputs[0], step.output)(signal, step.image),)


def _frozen_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return (FrozenScale(0.0).transpose(step.module, step.inputs[0], signal, step.image),)


def _unpool_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    shape = (signal.shape[0], *step.inputs[0].shape[1:])
    return (unpool(signal, step.state[step.image:step.image + 1], shape),)


def _sum_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return tuple(signal for _ in step.inputs)


def _cat_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return tuple(signal.split([x.shape[step.module.dim] for x in step.inputs], step.module.dim))


def _gate_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    """The signal times the gate; the gate's branch gets nothing."""
    index = signal_index(step.inputs, step.output, step.module.signal)
    gate = step.inputs[1 - index]
    gate = gate[step.image:step.image + 1] if gate.dim() == signal.dim() and gate.shape[0] > 1 else gate
    return tuple(signal * gate if i == index else None for i in range(2))


# --- modules for functional operations -------------------------------------------------------------------


class Add(nn.Module):
    """``a + b + …``: a residual connection."""

    def forward(self, *inputs: Tensor) -> Tensor:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class Subtract(nn.Module):
    """``a − b``: a sum with its second summand negated."""

    signs = (1.0, -1.0)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a - b


class Cat(nn.Module):
    """``torch.cat(inputs, dim)``: concatenation of feature maps (DenseNet, GoogLeNet, ShuffleNet)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.cat(inputs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Gate(nn.Module):
    """``signal * gate``, the gate broadcast over the signal (squeeze-and-excitation, layer scale).
    ``signal``: which factor is the signal where the structure says it (the other comes from a sigmoid or is
    a parameter)."""

    def __init__(self, signal: int | None = None):
        super().__init__()
        self.signal = signal

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b


def _two_tensors(call: Call) -> None:
    if len(call.args) != 2 or call.kwargs or not all(isinstance(a, fx.Node) for a in call.args):
        raise Unsupported("only a sum or product of two tensors")


def _add(call: Call) -> nn.Module:
    _two_tensors(call)
    return Add()


def _subtract(call: Call) -> nn.Module:
    _two_tensors(call)
    if call.args[0] is call.args[1]:
        raise Unsupported("x − x is zero")
    return Subtract()


def _divide(call: Call) -> nn.Module:
    """A tensor divided by a parameter or buffer broadcast over it (an input normalisation's std)."""
    _two_tensors(call)
    if call.args[1].op != "get_attr":
        raise Unsupported("only a division by a parameter or buffer: one computed from the input makes the map "
                          "non-linear")
    return Gate(0)


def _difference_deconv(step: Backstep, signal: Tensor, keep: Tensor | None) -> tuple:
    return signal, -signal


def _gate(call: Call) -> nn.Module:
    _two_tensors(call)
    if call.args[0] is call.args[1]:
        raise Unsupported("a product of a tensor with itself is not a gate")
    gates = [i for i, node in enumerate(call.args) if _is_gate(node, call.model)]
    return Gate(1 - gates[0] if len(gates) == 1 else None)


def _is_gate(node: fx.Node, model: nn.Module) -> bool:
    """A parameter, or a sigmoid's output: a factor that scales a signal."""
    if node.op == "get_attr":
        return True
    op = next((op for op in OPERATIONS if _shows(op, node, model.get_submodule(str(node.target))
                                                   if node.op == "call_module" else None)), None)
    return op is not None and op.name == "sigmoid"


def _scale(call: Call) -> None:
    """A tensor times (or divided by) a number."""
    number = (int, float)
    scaled = len(call.args) == 2 and not call.kwargs and (
        (isinstance(call.args[0], fx.Node) and isinstance(call.args[1], number)) or
        (isinstance(call.args[1], fx.Node) and isinstance(call.args[0], number) and call.node.target is not operator.truediv))
    if not scaled:
        raise Unsupported("only a tensor times or divided by a number")
    return None


def _concatenated(node: fx.Node) -> Sequence[fx.Node]:
    """The tensors a ``torch.cat`` node joins (positional or ``tensors=``)."""
    return node.args[0] if node.args else node.kwargs.get("tensors")


def _cat(call: Call) -> nn.Module:
    joined = _concatenated(call.node)
    if not isinstance(joined, (list, tuple)) or not all(isinstance(n, fx.Node) for n in joined):
        raise Unsupported("only a list of tensors")
    return Cat(call.argument(1, "dim", 0))


def _max_pool(call: Call) -> nn.Module:
    if call.module is not None:
        return call.module
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    return nn.MaxPool2d(**{name: call.argument(i + 1, name) for i, name in enumerate(names)
                           if call.argument(i + 1, name) is not None})


def _run_max_pool(module: nn.MaxPool2d | nn.AdaptiveMaxPool2d, a: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(module, nn.AdaptiveMaxPool2d):
        out, switches = F.adaptive_max_pool2d(a, module.output_size, return_indices=True)
    else:
        out, switches = F.max_pool2d(a, module.kernel_size, module.stride, module.padding, module.dilation,
                                     module.ceil_mode, return_indices=True)
    return out, switches.int() if a[0, 0].numel() < 2**31 else switches  # half the bytes


def _batch_norm(call: Call) -> nn.Module:
    module = call.module
    if module.running_mean is None or module.running_var is None:
        raise Unsupported("it has no running statistics (track_running_stats=False) and normalises with each "
                          "batch's own: an explanation would depend on the batch")
    return module


def _run_batch_norm(module: nn.modules.batchnorm._BatchNorm, a: Tensor) -> Tensor:
    """Eval semantics, whatever the module's mode."""
    return F.batch_norm(a, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)


class LayerNorm(nn.Module):
    """``F.layer_norm`` with the model's own weight and bias (ConvNeXt's LayerNorm2d calls it)."""

    def __init__(self, normalized_shape: Sequence[int], weight: Tensor | None, bias: Tensor | None, eps: float):
        super().__init__()
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.weight, self.bias = weight, bias

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _layer_norm(call: Call) -> nn.Module:
    if call.module is not None:
        return call.module
    return LayerNorm(call.argument(1, "normalized_shape"), call.argument(2, "weight"), call.argument(3, "bias"),
                     call.argument(4, "eps", 1e-5))


_RESAMPLING = ("nearest", "bilinear")


def _resample(call: Call) -> None:
    mode = call.module.mode if call.module is not None else call.argument(3, "mode", "nearest")
    if mode not in _RESAMPLING:
        raise Unsupported(f"only nearest and bilinear resampling, not '{mode}'")
    return call.module


class Attention(nn.Module):
    """Scaled dot-product attention from (query, key, value), as two parts the rules use: ``weights(q, k)`` =
    softmax(q·kᵀ·scale) per head (N, heads, T, S) and ``values(v, A)`` = the output for those weights.
    ``projections``: an ``nn.MultiheadAttention`` (its input and output projections, heads, batch_first);
    ``None``: ``F.scaled_dot_product_attention`` on (…, T, d) tensors."""

    def __init__(self, projections: nn.MultiheadAttention | None = None, scale: float | None = None,
                 causal: bool = False):
        super().__init__()
        self.projections, self.scale, self.causal = projections, scale, causal

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return self.values(value, self.weights(query, key))

    def _heads(self, x: Tensor, part: int) -> Tensor:
        """(N, T, E) or (T, N, E) → (N, heads, T, d) after the part's input projection."""
        m = self.projections
        if not m.batch_first:
            x = x.transpose(0, 1)
        if m._qkv_same_embed_dim:
            weight = m.in_proj_weight[part * m.embed_dim:(part + 1) * m.embed_dim]
        else:
            weight = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)[part]
        bias = None if m.in_proj_bias is None else m.in_proj_bias[part * m.embed_dim:(part + 1) * m.embed_dim]
        x = F.linear(x, weight, bias)
        return x.unflatten(-1, (m.num_heads, m.head_dim)).transpose(1, 2)

    def weights(self, query: Tensor, key: Tensor) -> Tensor:
        q, k = (query, key) if self.projections is None else (self._heads(query, 0), self._heads(key, 1))
        scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
        scores = q @ k.transpose(-2, -1) * scale
        if self.causal:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        return scores.softmax(-1)

    def values(self, value: Tensor, weights: Tensor) -> Tensor:
        if self.projections is None:
            return weights @ value
        m = self.projections
        out = F.linear((weights @ self._heads(value, 2)).transpose(1, 2).flatten(2), m.out_proj.weight,
                       m.out_proj.bias)
        return out if m.batch_first else out.transpose(0, 1)


def _multihead_attention(call: Call) -> nn.Module:
    module = call.module
    given = [name for name in ("key_padding_mask", "attn_mask") if call.argument(3 + ("key_padding_mask", "need_weights",
             "attn_mask").index(name), name) is not None]
    if given or call.kwargs.get("is_causal"):
        raise Unsupported(f"only attention without masks (it gets {', '.join(given) or 'is_causal'})")
    if module.bias_k is not None or module.add_zero_attn:
        raise Unsupported("only attention without add_bias_kv or add_zero_attn")
    if any(user.target is not operator.getitem or user.args[1] == 1 and user.users for user in call.node.users):
        raise Unsupported("only its output is read, not its attention weights")
    return Attention(module)


def _scaled_dot_product(call: Call) -> nn.Module:
    if call.argument(3, "attn_mask") is not None:
        raise Unsupported("only attention without a mask (is_causal=True is fine)")
    if call.kwargs.get("enable_gqa"):
        raise Unsupported("only attention with as many key heads as query heads")
    return Attention(None, call.argument(6, "scale"), bool(call.argument(5, "is_causal", False)))


def _run_attention(module: Attention, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """The output and, for the rule, the attention weights."""
    weights = module.weights(query, key)
    return module.values(value, weights), weights


def _query_key_value(node: fx.Node) -> list:
    return [node.args[i] if len(node.args) > i else node.kwargs[name] for i, name in enumerate(("query", "key", "value"))]


def _identity_run(module: nn.Module | None, a: Tensor, *rest: Any) -> Tensor:
    return a


def _stochastic_depth() -> tuple:
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # pragma: no cover — torchvision is a dependency
        return ()
    return (stochastic_depth,)


#: The registry: every operation the engine explains.
OPERATIONS: list[Operation] = [
    Operation("conv2d", "weighted", modules=(nn.Conv2d,), deconv=_weighted_deconv),
    Operation("linear", "weighted", modules=(nn.Linear,), deconv=_weighted_deconv),
    Operation("relu", "activation", modules=(nn.ReLU,), functions=(F.relu, torch.relu, torch.relu_),
              methods=("relu", "relu_"), rule=identity, deconv=rectify, in_place=F.relu_),
    Operation("relu6", "activation", modules=(nn.ReLU6,), functions=(F.relu6,), rule=identity, deconv=rectify,
              in_place=lambda a: F.hardtanh_(a, 0.0, 6.0)),
    Operation("leaky_relu", "activation", modules=(nn.LeakyReLU,), functions=(F.leaky_relu,), rule=identity,
              deconv=rectify),
    Operation("elu", "activation", modules=(nn.ELU, nn.CELU, nn.SELU), functions=(F.elu, F.celu, F.selu),
              rule=identity, deconv=rectify),
    Operation("silu", "activation", modules=(nn.SiLU,), functions=(F.silu,), rule=identity, deconv=rectify),
    Operation("gelu", "activation", modules=(nn.GELU,), functions=(F.gelu,), rule=identity, deconv=rectify),
    Operation("hardswish", "activation", modules=(nn.Hardswish,), functions=(F.hardswish,), rule=identity,
              deconv=rectify),
    Operation("mish", "activation", modules=(nn.Mish,), functions=(F.mish,), rule=identity, deconv=rectify),
    Operation("sigmoid", "activation", modules=(nn.Sigmoid, nn.Hardsigmoid, nn.Tanh),
              functions=(torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh, F.tanh), methods=("sigmoid", "tanh"),
              rule=identity, deconv=passes),
    Operation("batch_norm", "normalisation", modules=(nn.BatchNorm1d, nn.BatchNorm2d), build=_batch_norm,
              run=_run_batch_norm, rule=_frozen_scale, deconv=_frozen_deconv),
    Operation("layer_norm", "normalisation", modules=(nn.LayerNorm,), functions=(F.layer_norm,), build=_layer_norm,
              rule=_frozen_scale, deconv=_frozen_deconv),
    Operation("max_pool", "pooling", modules=(nn.MaxPool2d, nn.AdaptiveMaxPool2d), functions=(F.max_pool2d,),
              build=_max_pool,
              run=_run_max_pool, rule=_max_pool_rule, deconv=_unpool_deconv),
    Operation("avg_pool", "pooling", modules=(nn.AvgPool2d, nn.AdaptiveAvgPool2d),
              functions=(F.avg_pool2d, F.adaptive_avg_pool2d), rule=proportional, deconv=_linear_deconv),
    Operation("mean", "pooling", functions=(torch.mean,), methods=("mean",), rule=proportional, deconv=_linear_deconv),
    Operation("interpolate", "pooling", modules=(nn.Upsample,), functions=(F.interpolate,), build=_resample,
              rule=proportional, deconv=_linear_deconv),
    Operation("add", "sum", functions=(operator.add, operator.iadd, torch.add), methods=("add", "add_"),
              build=_add, inputs=lambda node: node.args, rule=_norm, deconv=_sum_deconv),
    Operation("subtract", "sum", functions=(operator.sub, operator.isub, torch.sub), methods=("sub", "sub_"),
              build=_subtract, inputs=lambda node: node.args, rule=_norm, deconv=_difference_deconv),
    Operation("divide", "gate", functions=(operator.truediv, operator.itruediv, torch.div), methods=("div", "div_"),
              build=_divide, inputs=lambda node: node.args, rule=lambda composite: SignalTakesAll(),
              deconv=_linear_deconv),
    Operation("cat", "concat", functions=(torch.cat, torch.concat), build=_cat, inputs=_concatenated,
              rule=lambda composite: Split(), deconv=_cat_deconv),
    Operation("gate", "gate", functions=(operator.mul, operator.imul, torch.mul), methods=("mul", "mul_"),
              build=_gate, inputs=lambda node: node.args, rule=lambda composite: SignalTakesAll(),
              deconv=_gate_deconv),
    Operation("scale", "identity", functions=(operator.mul, operator.imul, torch.mul, operator.truediv),
              methods=("mul", "div"), build=_scale, rule=identity, deconv=_linear_deconv),
    Operation("reshape", "reshape", modules=(nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle,
                                             nn.ChannelShuffle),
              functions=(torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
                         torch.unsqueeze, operator.getitem, torch.narrow),
              methods=("view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "narrow",
                       "contiguous", "clone", "expand", "expand_as", "repeat"),
              rule=lambda composite: Moves(),
              deconv=_moves_deconv),
    Operation("attention", "attention", modules=(nn.MultiheadAttention,), functions=(F.scaled_dot_product_attention,),
              build=lambda call: (_multihead_attention if call.module is not None else _scaled_dot_product)(call),
              inputs=_query_key_value, run=_run_attention, rule=lambda composite: FrozenAttention(composite.stabilizer)),
    Operation("identity", "identity", modules=(nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity),
              functions=(F.dropout, F.dropout2d, *_stochastic_depth()),
              run=_identity_run, rule=identity, deconv=passes),
]


#: A parameter or buffer the forward reads (``x + self.offset``, a layer scale): it absorbs the relevance it
#: gets, as a bias does.
CONSTANT = Operation("constant", "identity", rule=lambda composite: Absorb(), deconv=lambda step, signal, keep: ())


def register(operation: Operation) -> None:
    """Add an operation (it takes precedence over the entries before it)."""
    OPERATIONS.insert(0, operation)


def supported() -> str:
    """The supported operations in words, for error messages."""
    return ", ".join(op.words for op in OPERATIONS)


def match(node: fx.Node, model: nn.Module) -> tuple[Operation | None, nn.Module | None, str, str]:
    """The entry a node is, its module, the operation in words, and why an entry refused it (or "")."""
    if node.op == "get_attr":
        return CONSTANT, None, f"parameter {node.target}", ""
    module = model.get_submodule(str(node.target)) if node.op == "call_module" else None
    words = describe(node, module)
    reasons = []
    for op in OPERATIONS:
        if not _shows(op, node, module):
            continue
        try:
            return op, op.build(Call(node, model, module)), words, ""
        except Unsupported as reason:
            reasons.append(str(reason))
    return None, None, words, reasons[0] if reasons else ""


def _shows(op: Operation, node: fx.Node, module: nn.Module | None) -> bool:
    if node.op == "call_module":
        return isinstance(module, op.modules)
    if node.op == "call_function":
        return any(node.target is f for f in op.functions)
    return node.op == "call_method" and node.target in op.methods


def describe(node: fx.Node, module: nn.Module | None = None) -> str:
    """The operation in words: ``module GELU``, ``function torch.nn.functional.gelu``, ``method Tensor.sort``."""
    if node.op == "call_module":
        return f"module {type(module).__name__}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    if node.op == "call_function":
        target = node.target
        words = ".".join(filter(None, (getattr(target, "__module__", None), getattr(target, "__name__", str(target)))))
        return "function " + words.replace("_operator.", "operator.").replace("torch._C._nn.", "torch.nn.functional.")
    return f"{node.op} {node.target}"


_IN_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
             operator.itruediv: operator.truediv}


def is_in_place(node: fx.Node, model: nn.Module) -> bool:
    """Whether the node changes its first argument in place (``h += x``, ``x.relu_()``, ``ReLU(inplace=True)``)."""
    if node.op == "call_function":
        return node.target in _IN_PLACE or node.kwargs.get("inplace") is True
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("_")
    if node.op == "call_module":
        return getattr(model.get_submodule(str(node.target)), "inplace", False) is True
    return False


def out_of_place(node: fx.Node) -> tuple[Any, dict]:
    """The node's target and keyword arguments without changing anything in place (replays must not)."""
    kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
    if node.op == "call_function":
        return _IN_PLACE.get(node.target, node.target), kwargs
    target = str(node.target)
    if node.op == "call_method" and target.endswith("_") and not target.startswith("_") and hasattr(Tensor, target[:-1]):
        return target[:-1], kwargs
    return node.target, kwargs
