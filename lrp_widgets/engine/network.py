"""A model as the graph of operations that LRP walks through, from torch.fx symbolic tracing.

Every operation that carries relevance becomes a :class:`Step`: a module call (named by the module's
path, e.g. ``layer1.0.conv1``), or a function in a module's ``forward`` (named after that module and
the operation: ``layer1.0.add``). What each operation is — its role, rule and deconvnet step — comes from
the registry in :mod:`.operations`. Batch norm right after a convolution is folded into it, on a copy:
the user's model is never changed. Shape queries (``x.size(0)``) are evaluated but carry no relevance. An
in-place operation (``h += f(h)``) is replayed as eager PyTorch runs it: later readers of ``h`` see the sum.

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
from typing import Any, Callable, Mapping

import torch
from torch import fx, nn

from ..errors import ModelError, TargetError
from .operations import Attention, Operation, is_in_place, match, out_of_place, supported

#: The input step's name.
INPUT = "input"
#: A part picked from a result: ``result[i]``, ``result.values``.
_PICKS = ("function operator.getitem", "function builtins.getattr")
#: Calls whose output is a tuple that ``[i]`` picks from: the pick reads the tensor itself.
_SPLITS = {"chunk", "split", "unbind", "tensor_split", torch.chunk, torch.split, torch.unbind, torch.tensor_split}


@dataclass(eq=False)
class Step:
    """One operation: its name, the steps whose outputs it reads, what it is and how it runs.

    ``op`` is the operation's registry entry (``None`` for one LRP cannot pass, or one that computes no
    tensor); ``module`` the module it runs or describes (a weighted layer, a pooling …); ``call`` replays
    the traced call from the outputs computed so far (``None``: the module's call).
    """

    name: str
    inputs: tuple[str, ...]  # the tensors relevance flows to
    reads: tuple[str, ...]  # every value the operation reads (shape queries included)
    op: Operation | None
    module: nn.Module | None
    call: Callable[[Mapping[str, Any]], Any] | None = field(default=None, repr=False)
    scope: str = ""  # the module whose forward holds the operation
    operation: str = ""  # what it is, in words, for error messages
    refusal: str = ""  # why the registry's entry for it refused it

    def run(self, env: Mapping[str, Any]) -> Any:
        """The operation's output, from the outputs computed so far (``env``: step name → value)."""
        if self.call is not None:
            return self.call(env)
        return self.module(*(env[name] for name in self.inputs))

    @property
    def role(self) -> str | None:
        return self.op.role if self.op is not None else None

    @property
    def weighted(self) -> bool:
        return self.role == "weighted"


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
        self.relevant = self._relevant()
        self.cuts = self._cuts()

    @property
    def names(self) -> list[str]:
        """Every step but the input, in forward order."""
        return [step.name for step in self.steps[1:]]

    @property
    def weighted(self) -> list[str]:
        return [step.name for step in self.steps if step.weighted]

    def _relevant(self, unknown_gates: bool = True) -> set[str]:
        """The steps relevance may reach from the output: of a gate's factors the signal where the structure
        names it, else both (``unknown_gates``) or neither (the shapes decide when it runs)."""
        reached = {self.output}
        for step in reversed(self.steps[1:]):
            if step.name in reached and step.op is not None:
                signal = step.module.signal if step.role == "gate" else None
                if signal is not None:
                    reached.add(step.inputs[signal])
                elif step.role != "gate" or unknown_gates:
                    reached.update(step.inputs)
        return reached

    def _cuts(self) -> set[str]:
        """The relevant steps all relevance passes through on its way to the input (none bypasses them: a
        chain of them is a graph without parallel branches between its layers)."""
        covered = [0] * (len(self.steps) + 1)  # how many reads jump over each position
        for step in self.steps:
            if step.name in self.relevant and step.op is not None:
                for source in step.inputs:
                    if self.order[source] + 1 < self.order[step.name]:
                        covered[self.order[source] + 1] += 1
                        covered[self.order[step.name]] -= 1
        cuts, jumps = set(), 0
        for index, step in enumerate(self.steps):
            jumps += covered[index]
            if jumps == 0 and step.name in self.relevant:
                cuts.add(step.name)
        return cuts

    def check(self) -> None:
        """Raise a :class:`ModelError` naming the first operation relevance would reach and cannot pass (past
        a gate whose signal only the shapes tell, when relevance reaches it)."""
        reached = self._relevant(unknown_gates=False)
        for step in reversed(self.steps[1:]):
            if step.name in reached and step.op is None:
                raise ModelError(self.unsupported(step.name))

    def unsupported(self, name: str) -> str:
        """What to say when relevance reaches an operation that cannot pass it (for a part picked from an
        operation's result, ``torch.sort(x).values``, that operation)."""
        step = self.by_name[name]
        while step.operation in _PICKS and step.reads and self.by_name[step.reads[0]].op is None:
            step = self.by_name[step.reads[0]]
            name = step.name
        where = f" in module '{step.scope}'" if step.scope else ""
        if step.refusal:
            return f"unsupported operation '{name}' ({step.operation}{where}): {step.refusal}"
        return f"unsupported operation '{name}' ({step.operation}{where}): relevance can pass {supported()}"

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
    _replay_in_place(graph, model)
    names: dict[fx.Node, str] = {placeholders[0]: INPUT}
    steps: list[Step] = [Step(INPUT, (), (), None, None, operation="input")]
    taken: Counter = Counter()
    by_name: dict[str, Step] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        op, module, operation, refusal = match(node, model)
        reads = tuple(dict.fromkeys(names[n] for n in node.all_input_nodes))
        if op is not None and op.name == "batch_norm" and isinstance(module, nn.BatchNorm2d) and len(reads) == 1:
            source = by_name.get(reads[0])
            if source is not None and isinstance(source.module, nn.Conv2d) and len(node.all_input_nodes[0].users) == 1:
                source.module = fold_batch_norm(source.module, module)
                names[node] = source.name  # the convolution now computes the batch norm's output
                continue
        picked = by_name.get(names.get(node.args[0])) if node.target is operator.getitem and node.args else None
        if picked is not None and isinstance(picked.module, Attention) and picked.module.projections is not None:
            names[node] = picked.name  # nn.MultiheadAttention's (output, weights)[0]: the attention step's output
            continue
        name = _unique(_name(node), taken)
        names[node] = name
        if getattr(module, "inplace", False):  # the step runs out of place: the engine shares tensors itself
            module = copy.copy(module)
            module.inplace = False
        call = None if node.op == "call_module" and module is not None else _generic(model, node, names)
        inputs = reads if op is None else tuple(names[n] for n in op.inputs(node))
        source = node.args[0] if node.target is operator.getitem else None
        if isinstance(source, fx.Node) and (source.target in _SPLITS) and source.args:
            inputs, call = (names[source.args[0]],), _picked(_generic(model, source, names), node.args[1])
        step = Step(name, inputs, reads, op, module, call, _scope(node), operation, refusal)
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


def _replay_in_place(graph: fx.Graph, model: nn.Module) -> None:
    """Readers of a tensor after an in-place operation on it read the operation's result, as in eager
    PyTorch (fx would give them the value from before)."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        if not node.args or not isinstance(node.args[0], fx.Node) or not is_in_place(node, model):
            continue
        changed = node.args[0]
        for user in list(changed.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(changed, node)


def _picked(split: Callable[[Mapping[str, Any]], Any], index: Any) -> Callable[[Mapping[str, Any]], Any]:
    """``split(x)[index]`` from the values computed so far: a chunk of a tensor reads the tensor."""
    return lambda env: split(env)[index]


def _generic(model: nn.Module, node: fx.Node, names: dict[fx.Node, str]) -> Callable[[Mapping[str, Any]], Any]:
    """Run the node as traced (out of place), from the values computed so far."""
    target, kwargs = out_of_place(node)

    def run(env: Mapping[str, Any]) -> Any:
        args = fx.node.map_arg(node.args, lambda n: env[names[n]])
        keywords = fx.node.map_arg(kwargs, lambda n: env[names[n]])
        if node.op == "call_function":
            return target(*args, **keywords)
        if node.op == "call_method":
            return getattr(args[0], target)(*args[1:], **keywords)
        if node.op == "call_module":
            return model.get_submodule(str(node.target))(*args, **keywords)
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


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` (eval mode; without affine parameters: weight 1, bias 0)."""
    fused = copy.copy(conv)
    fused._parameters = dict(conv._parameters)
    weight = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    scale = weight / torch.sqrt(bn.running_var + bn.eps)  # as zennit's merge computes it, to the last bit
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = bn.bias.detach() if bn.bias is not None else 0.0
    fused.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None, None], requires_grad=False)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
    return fused
