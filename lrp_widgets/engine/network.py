"""A model as the graph of operations that LRP walks through, from torch.fx symbolic tracing.

Every operation that carries relevance becomes a :class:`Step`: a module call (named by the module's
path, e.g. ``layer1.0.conv1``), or a function in a module's ``forward`` (named after that module and
the operation: ``layer1.0.add``). Functional relu, pooling, flatten and dropout become the equivalent
modules; ``+`` becomes :class:`Add`, ``torch.cat`` :class:`Cat`, ``*`` :class:`Gate`. Batch norm right
after a convolution is folded into it, on a copy: the user's model is never changed. Shape queries
(``x.size(0)``) are evaluated but carry no relevance.

>>> from torchvision.models import resnet18
>>> network = trace(resnet18())
>>> network.steps[1].name, network.blocks["layer1.0"], network.output
('conv1', 'layer1.0.relu@1', 'fc')
"""
from __future__ import annotations

import copy
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..errors import ModelError, TargetError

#: Layers that carry weights: the neurons of the graph live here.
WEIGHTED = (nn.Conv2d, nn.Linear)
#: The input step's name.
INPUT = "input"


class Add(nn.Module):
    """``a + b + …``: a residual connection."""

    def forward(self, *inputs: Tensor) -> Tensor:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class Cat(nn.Module):
    """``torch.cat(inputs, dim)``: concatenation of feature maps (DenseNet, GoogLeNet, SqueezeNet)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.cat(inputs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Gate(nn.Module):
    """``signal * gate``, the gate broadcast over the signal (squeeze-and-excitation)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b


#: Module types a step may hold, and what they are to LRP.
PASSING = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.BatchNorm2d)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SUPPORTED = (*WEIGHTED, *PASSING, *POOLS, nn.Flatten, Add, Cat, Gate)


@dataclass(eq=False)
class Step:
    """One operation: its name, the steps whose outputs it reads, and how it runs.

    ``module`` is one of :data:`SUPPORTED` (``None`` for an operation LRP cannot pass, or one that
    computes no tensor); ``call`` runs the operation from the outputs computed so far.
    """

    name: str
    inputs: tuple[str, ...]  # the tensors the module is called with
    reads: tuple[str, ...]  # every value the operation reads (shape queries included)
    module: nn.Module | None
    call: Callable[[dict[str, Any]], Any] | None = field(default=None, repr=False)  # None: the module's call
    scope: str = ""  # the module whose forward holds the operation
    operation: str = ""  # what it is, in words, for error messages

    def run(self, env: dict[str, Any]) -> Any:
        """The operation's output, from the outputs computed so far (``env``: step name → value)."""
        if self.call is not None:
            return self.call(env)
        return self.module(*(env[name] for name in self.inputs))

    @property
    def weighted(self) -> bool:
        return isinstance(self.module, WEIGHTED)


@dataclass
class Network:
    """The steps in forward (topological) order, the first being the input."""

    steps: list[Step]
    output: str
    blocks: dict[str, str]  # module path → the step computing that module's output
    model: nn.Module = field(repr=False)

    def __post_init__(self):
        self.by_name = {step.name: step for step in self.steps}
        self.order = {step.name: index for index, step in enumerate(self.steps)}
        self._regions: dict[tuple[str, str], list[str]] = {}
        self.consumers: dict[str, list[str]] = {step.name: [] for step in self.steps}
        for step in self.steps:
            for name in step.reads:
                self.consumers[name].append(step.name)

    @property
    def names(self) -> list[str]:
        """Every step but the input, in forward order."""
        return [step.name for step in self.steps[1:]]

    @property
    def weighted(self) -> list[str]:
        return [step.name for step in self.steps if step.weighted]

    def check(self) -> None:
        """Raise a :class:`ModelError` naming the first operation relevance would reach and cannot pass.
        A gate's inputs are checked when it runs (which one is the signal depends on the shapes)."""
        reached = {self.output}
        for step in reversed(self.steps[1:]):
            if step.name in reached:
                if step.module is None:
                    raise ModelError(self.unsupported(step.name))
                if not isinstance(step.module, Gate):
                    reached.update(step.inputs)

    def unsupported(self, name: str) -> str:
        """What to say when relevance reaches an operation that cannot pass it."""
        step = self.by_name[name]
        where = f" in module '{step.scope}'" if step.scope else ""
        return (f"unsupported operation '{name}' ({step.operation}{where}): relevance can pass Conv2d, Linear, "
                "ReLU, ReLU6, BatchNorm2d, max/average pooling, flatten/view/reshape, Dropout, +, torch.cat and "
                "a gate's *")

    def region(self, start: str, stop: str = INPUT) -> list[str]:
        """The steps relevance passes from the output of ``start`` down to the output of ``stop`` (every
        branch between them), ``start`` first, in reverse forward order."""
        if (start, stop) not in self._regions:
            self._regions[start, stop] = self._region(start, stop)
        return self._regions[start, stop]

    def _region(self, start: str, stop: str) -> list[str]:
        for name in (start, stop):
            if name not in self.by_name or name == start == INPUT:
                raise TargetError(f"unknown layer '{name}'")
        order = [step.name for step in self.steps]
        above = {start}  # steps relevance can reach from start
        for name in reversed(order[:self.order[start] + 1]):
            if name in above:
                above.update(self.by_name[name].inputs)
        if stop not in above:
            raise TargetError(f"layer '{stop}' is not below '{start}' (conditions on parallel branches cannot be "
                              "chained)")
        below = {stop}  # steps fed by stop
        for name in order[self.order[stop]:]:
            if below.intersection(self.by_name[name].inputs):
                below.add(name)
        return [name for name in reversed(order) if name in above and name in below and name != stop]

    def resolve(self, name: str) -> str:
        """A step's name from a step or module name (a block's name gives the step computing its output)."""
        if name in self.by_name:
            return name
        if name in self.blocks:
            return self.blocks[name]
        raise ModelError(f"unknown layer '{name}': give a module name such as {', '.join(self.weighted[:3])}")

    def family(self) -> str:
        """The torchvision family the model belongs to, or ``"custom"``."""
        for family, module in _FAMILIES.items():
            if isinstance(self.model, module()):
                return family
        return "custom"

    def graph_layers(self) -> list[str]:
        """The neuron graph's default layers, input to output: every residual block's output (ResNet),
        every dense block and transition (DenseNet), every block of ``features`` (MobileNet), every
        inception (GoogLeNet) or fire module (SqueezeNet), else every Conv2d/Linear layer; the output last."""
        blocks = self.graph_blocks()
        return [self.blocks[path] for path in blocks] + [self.output] if blocks else self.weighted

    def graph_blocks(self) -> list[str]:
        """The module names of the default graph's blocks (none for VGG-like and custom models)."""
        family = self.family()
        if family == "resnet":
            paths = [f"{stage}.{index}" for stage in ("layer1", "layer2", "layer3", "layer4")
                     for index in range(len(self.model.get_submodule(stage)))]
        elif family == "densenet":
            paths = [f"features.{name}" for name, _ in self.model.features.named_children()
                     if name.startswith(("denseblock", "transition"))]
        elif family == "mobilenet":
            paths = [f"features.{name}" for name, _ in self.model.features.named_children()]
        elif family in ("googlenet", "squeezenet"):
            kind = "Inception" if family == "googlenet" else "Fire"
            paths = [name for name, module in self.model.named_modules() if type(module).__name__ == kind]
        else:
            return []
        return paths

    def display_names(self) -> dict[str, str]:
        """Readable names of steps: VGG's own (conv1_1 … conv5_3, pool1 … pool5, fc6 … fc8) for a VGG-like
        chain — convs in blocks ended by max-pooling, then linear layers —, block names for block outputs,
        else the step names.

        >>> from torchvision.models import vgg16
        >>> names = trace(vgg16()).display_names()
        >>> names["features.0"], names["features.28"], names["features.30"], names["classifier.6"]
        ('conv1_1', 'conv5_3', 'pool5', 'fc8')
        """
        names = {name: name for name in self.names}
        # a step computing several blocks' outputs is named after the graph's block, else the innermost
        # (layer1.2, not layer1)
        names.update({step: block for block, step in sorted(self.blocks.items(), key=lambda item: len(item[0]))})
        names.update({self.blocks[block]: block for block in self.graph_blocks()})
        if self.family() not in ("vgg", "alexnet", "custom") or any(len(s.inputs) > 1 for s in self.steps):
            return names
        vgg, block, conv, linear = {}, 1, 0, 5
        for step in self.steps[1:]:
            if isinstance(step.module, nn.Conv2d):
                conv += 1
                vgg[step.name] = f"conv{block}_{conv}"
            elif isinstance(step.module, nn.MaxPool2d):
                vgg[step.name] = f"pool{block}"
                block, conv = block + 1, 0
            elif isinstance(step.module, nn.Linear):
                linear += 1
                vgg[step.name] = f"fc{linear}"
        return {**names, **vgg} if any(name.startswith("pool") for name in vgg.values()) else names


def _family(name: str) -> Callable[[], type]:
    def module() -> type:
        import torchvision.models as models
        return getattr(models, name)
    return module


_FAMILIES = {"vgg": _family("VGG"), "alexnet": _family("AlexNet"), "resnet": _family("ResNet"),
             "densenet": _family("DenseNet"), "mobilenet": _family("MobileNetV2"), "googlenet": _family("GoogLeNet"),
             "squeezenet": _family("SqueezeNet")}


class _Tracer(fx.Tracer):
    """torch.fx's tracer that also notes which node computes each module's output."""

    def __init__(self):
        super().__init__()
        self.outputs: dict[str, fx.Node] = {}

    def call_module(self, m: nn.Module, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        if isinstance(out, fx.Proxy) and not self.is_leaf_module(m, path):  # blocks, not layers
            self.outputs[path] = out.node
        return out


def trace(model: nn.Module) -> Network:
    """The model's graph of operations (traced in eval mode; the model's own mode is left as it was)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 — any tracing failure is the user's model's, said in one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(f"cannot follow the forward pass of {type(model).__name__} with torch.fx ({first[:200]}): "
                         "explainable models compute the same operations for every input") from None
    finally:
        for module, mode in modes:
            module.train(mode)
    return _build(model, graph, tracer.outputs)


def _build(model: nn.Module, graph: fx.Graph, module_outputs: dict[str, fx.Node]) -> Network:
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ModelError(f"{type(model).__name__} takes {len(placeholders)} inputs: LRP here explains models of one image")
    names: dict[fx.Node, str] = {placeholders[0]: INPUT}
    steps: list[Step] = [Step(INPUT, (), (), None, operation="input")]
    taken: Counter = Counter()
    by_name: dict[str, Step] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        module, operation = _operation(model, node)
        reads = tuple(dict.fromkeys(names[n] for n in node.all_input_nodes))
        if isinstance(module, nn.BatchNorm2d) and len(reads) == 1:
            source = by_name.get(reads[0])
            if source is not None and isinstance(source.module, nn.Conv2d) and len(node.all_input_nodes[0].users) == 1:
                source.module = fold_batch_norm(source.module, module)
                names[node] = source.name  # the convolution now computes the batch norm's output
                continue
        name = _unique(_name(node), taken)
        names[node] = name
        if module is None:
            inputs, call = reads, _generic(model, node, names)
        elif node.op == "call_method" and node.target in _RESHAPES:
            inputs, call = (names[node.args[0]],), _generic(model, node, names)
        else:
            sources = _concatenated(node) if isinstance(module, Cat) else node.all_input_nodes
            inputs, call = tuple(names[n] for n in sources), None
        step = Step(name, inputs, reads, module, call, _scope(node), operation)
        steps.append(step)
        by_name[name] = step
    out = next(node for node in graph.nodes if node.op == "output").args[0]
    if not isinstance(out, fx.Node):
        raise ModelError(f"{type(model).__name__} returns {type(out).__name__}: LRP here explains models returning one "
                         "tensor of class scores")
    if names[out] == INPUT:
        raise ModelError(f"unsupported model {type(model).__name__}: it returns its input unchanged")
    blocks = {path: names[node] for path, node in module_outputs.items() if path and node in names}
    network = Network(steps, names[out], blocks, model)
    network.check()
    return network


def _generic(model: nn.Module, node: fx.Node, names: dict[fx.Node, str]) -> Callable[[dict], Any]:
    """Run the node as traced, from the values computed so far."""
    def run(env: dict) -> Any:
        args = fx.node.map_arg(node.args, lambda n: env[names[n]])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[names[n]])
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "call_module":
            return model.get_submodule(str(node.target))(*args, **kwargs)
        value = model  # get_attr
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    return run


def _name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "op")
    op = op.strip("_").replace("iadd", "add").replace("imul", "mul")
    scope = _scope(node)
    return f"{scope}.{op}" if scope else op


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values()]
    if node.op == "call_module":
        paths = paths[:-1]
    return paths[-1] if paths else ""


def _unique(name: str, taken: Counter) -> str:
    count = taken[name]
    taken[name] += 1
    return name if count == 0 else f"{name}@{count}"


_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}
_RESHAPES = {"view", "reshape"}


def _flatten(args: list, kwargs: dict) -> nn.Flatten:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return nn.Flatten(start, end)


_FUNCTIONS: dict[Any, Callable[[list, dict], nn.Module]] = {
    F.relu: lambda a, k: nn.ReLU(), torch.relu: lambda a, k: nn.ReLU(), F.relu6: lambda a, k: nn.ReLU6(),
    F.dropout: lambda a, k: nn.Dropout(), torch.flatten: _flatten,
    F.max_pool2d: lambda a, k: nn.MaxPool2d(*a, **{n: v for n, v in k.items() if n != "return_indices"}),
    F.avg_pool2d: lambda a, k: nn.AvgPool2d(*a, **k), F.adaptive_avg_pool2d: lambda a, k: nn.AdaptiveAvgPool2d(*a, **k),
}
_METHODS: dict[str, Callable[[list, dict], nn.Module]] = {
    "relu": lambda a, k: nn.ReLU(), "relu_": lambda a, k: nn.ReLU(), "flatten": _flatten,
}


def _concatenated(node: fx.Node):
    """The tensors a ``torch.cat`` node joins (positional or ``tensors=``)."""
    return node.args[0] if node.args else node.kwargs.get("tensors")


def _operation(model: nn.Module, node: fx.Node) -> tuple[nn.Module | None, str]:
    """The supported module a node amounts to (``None`` if none) and the operation in words."""
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        return (module if isinstance(module, SUPPORTED) else None), f"module {type(module).__name__}"
    if node.op not in ("call_function", "call_method"):
        return None, f"{node.op} {node.target}"
    target = node.target
    if node.op == "call_method":
        words = f"method Tensor.{target}"
    else:
        words = "function " + ".".join(filter(None, (getattr(target, "__module__", None),
                                                      getattr(target, "__name__", str(target)))))
        words = words.replace("_operator.", "operator.").replace("torch._C._nn.", "torch.nn.functional.")
    tensors = node.all_input_nodes
    constants = [a for a in node.args[1:] if not isinstance(a, fx.Node)]
    if any(isinstance(v, fx.Node) for v in node.kwargs.values()):
        return None, words
    kwargs = {k: v for k, v in node.kwargs.items() if k not in ("inplace", "training")}
    two_tensors = len(tensors) == 2 and len(node.args) == 2 and not node.kwargs
    if target in _ADD or target in ("add", "add_"):
        return (Add() if two_tensors else None), words
    if target in _MUL or target in ("mul", "mul_"):
        return (Gate() if two_tensors else None), words
    if target is torch.cat:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        listed = isinstance(_concatenated(node), (list, tuple)) and all(isinstance(n, fx.Node) for n in _concatenated(node))
        return (Cat(dim) if listed else None), words
    if node.op == "call_method" and target in _RESHAPES:
        return nn.Flatten(), words  # relevance takes the input's shape back, whatever the new shape
    builders = _METHODS if node.op == "call_method" else _FUNCTIONS
    if target in builders and len(tensors) == 1:
        return builders[target](constants, kwargs), words
    return None, words


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` (eval mode)."""
    fused = copy.copy(conv)
    fused._parameters = dict(conv._parameters)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None, None], requires_grad=False)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)
    return fused
