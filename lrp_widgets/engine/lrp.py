"""One forward pass that stores every layer's output, one LRP backward pass that stores every
layer's relevance, and the bound per-layer propagators that later analyses reuse.

>>> import torch
>>> from torchvision.models import vgg11
>>> explainer = Explainer(vgg11().eval())
>>> explanation = explainer.explain(torch.randn(1, 3, 224, 224))
>>> explanation.relevances["input"].shape
torch.Size([1, 3, 224, 224])
"""
from __future__ import annotations

import numbers
import warnings
from collections import ChainMap
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ImageError, LRPWidgetsError, ModelError, TargetError
from .composites import Composite, get_composite, pixel_bounds
from .families import graph_layers
from .models import LoadedModel
from .network import INPUT, Network, Step, trace
from .rules import Propagator

#: The transient memory a batched propagation may take; more conditions are propagated in several batches.
PROPAGATION_BYTES = 64 * 2**20

#: One backward step: (step name, relevance at its output, the channel kept per row or None) → the
#: relevance at each of its inputs (``None`` for an input that gets none).
Backward = Callable[[str, Tensor, "Tensor | None"], "tuple[Tensor | None, ...]"]


@dataclass
class Explanation:
    """Activations and relevances at every step of one batch, and the propagators that made them.

    ``activations[name]`` / ``relevances[name]`` are a step's output and the relevance there (step
    names: :mod:`~lrp_widgets.engine.network`); ``relevances["input"]`` is the input relevance. A
    Conv2d/Linear layer or a residual addition whose only reader is a ReLU shares the ReLU's (rectified)
    output. ``others`` holds the outputs that are no tensors (shape queries, a chunk's parts).
    """

    network: Network
    inputs: Tensor
    logits: Tensor
    targets: Tensor
    activations: dict[str, Tensor]
    relevances: dict[str, Tensor]
    propagators: dict[str, Propagator] = field(repr=False)
    maxpool_indices: dict[str, Tensor] = field(repr=False)
    others: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        """The steps with a tensor output, in forward order."""
        return [name for name in self.network.names if name in self.activations]

    @property
    def weighted(self) -> list[str]:
        """The Conv2d/Linear layer names, input to output."""
        return self.network.weighted

    @property
    def map_layers(self) -> list[str]:
        """The neuron graph's default layers that have feature maps (or tokens on a patch grid): where Algorithm 1
        and the sweep run."""
        return [name for name in graph_layers(self.network) if self.activations[name].dim() == 4
                or (self.activations[name].dim() == 3 and patch_grid(self.activations[name].shape[1]) is not None)]

    def maps(self, name: str, relevance: bool = True) -> Tensor:
        """The relevance (or activation) at step ``name`` with channels at dimension 1: feature maps (N, C, H, W) and
        units (N, C) as they are, tokens (N, T, D) as (N, D, T)."""
        return channels_first((self.relevances if relevance else self.activations)[name])

    def channel_mask(self, name: str, kept: Tensor) -> Tensor:
        """Masks (B, C) of channels as multipliers of the relevance at step ``name``, in its own layout."""
        shape = self.value(name).shape
        return kept[:, None, :] if len(shape) == 3 else kept.reshape(*kept.shape, *([1] * (len(shape) - 2)))

    @property
    def output_relevance(self) -> Tensor:
        """The logit of each explained class."""
        return self.logits.gather(1, self.targets[:, None])[:, 0]

    def relevance_sums(self) -> dict[str, Tensor]:
        """Σ relevance at every step's output (and at the input), per image: the conservation table."""
        sums = {INPUT: self.relevances[INPUT].flatten(1).sum(1)}
        sums.update({name: self.relevances[name].flatten(1).sum(1) for name in self.names if name in self.relevances})
        return sums

    @property
    def nbytes(self) -> int:
        """The memory the explanation holds: activations, relevances, switches and the propagators' stored z."""
        tensors = [*self.activations.values(), *self.relevances.values(), *self.maxpool_indices.values(), self.inputs]
        tensors += [t for propagate in self.propagators.values() for t in getattr(propagate, "stored", ())]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())

    def value(self, name: str) -> Tensor:
        """The output of step ``name`` (``"input"``: the input batch)."""
        return self.inputs if name == INPUT else self.activations[name]

    def function(self, name: str) -> Callable[[Tensor], Tensor]:
        """Step ``name`` as a function of its first input, every other value as stored."""
        step = self.network.by_name[name]
        values = ChainMap({INPUT: self.inputs}, self.activations, self.others)
        return lambda x: step.run(values.new_child({step.inputs[0]: x}))

    def region(self, start: str, stop: str = INPUT) -> list[str]:
        """The steps relevance passes from the output of ``start`` down to the output of ``stop``, start first."""
        return self.network.region(start, stop)

    @torch.no_grad()
    def propagate(self, relevance: Tensor, start: str, stop: str = INPUT, image: int = 0,
                  masks: Mapping[str, Tensor] | None = None, channels: Mapping[str, Tensor] | None = None,
                  reduce: Callable[[Tensor], Tensor] | None = None, backward: Backward | None = None) -> Tensor:
        """Propagate a batch of relevances given at the output of step ``start`` down to the output of
        ``stop`` (default: the input), for image ``image`` of the stored batch, through every branch between.

        ``masks[name]`` (broadcastable to the relevance there) multiplies the relevance at the output of
        that step; ``channels[name]`` (one index per row) keeps only that channel there — the cheap
        path for single-neuron conditions. The relevance at ``start`` is masked too. Below a conditioned
        step only the relevance that passed it goes on: what bypasses it (a residual shortcut around a
        conv) is dropped, as zennit-crp's ``CondAttribution`` does (``exclude_parallel``).

        Rows are propagated in batches whose transient buffers fit ``PROPAGATION_BYTES``; ``reduce``
        (e.g. a sum over space) is applied to each batch's result, so the full maps of all rows never
        exist at once. ``backward`` replaces the LRP rules (the deconvnet passes its own).
        """
        masks, channels = dict(masks or {}), dict(channels or {})
        for name in [name for name in channels if self.value(name).dim() == 3]:  # tokens: a channel is their last dim
            keep = channels.pop(name)
            one_hot = torch.nn.functional.one_hot(keep, self.value(name).shape[-1]).to(relevance.dtype)[:, None, :]
            masks[name] = one_hot * masks[name] if name in masks else one_hot
        region = self.region(start, stop)
        n = relevance.shape[0]
        # rows in batches whose transient buffers (~3 of the largest layer passed) fit PROPAGATION_BYTES
        largest = max((self.value(source)[0].numel() for name in region
                       for source in self.network.by_name[name].inputs), default=relevance[0].numel())
        size = max(1, PROPAGATION_BYTES // (3 * largest * relevance.element_size()))
        if n > size:
            def rows(values: Mapping[str, Tensor], part: slice) -> dict[str, Tensor]:
                return {k: v[part] if v.dim() and v.shape[0] == n else v for k, v in values.items()}
            result = None
            for part in (slice(i, i + size) for i in range(0, n, size)):
                done = self.propagate(relevance[part], start, stop, image, rows(masks, part), rows(channels, part),
                                      reduce, backward)
                result = done.new_empty((n, *done.shape[1:])) if result is None else result
                result[part] = done
            return result
        backward = backward or self._lrp_step(image)
        inside = set(region)
        conditioned = sorted({name for name in (*masks, *channels) if name in inside and name != start},
                             key=self.network.order.__getitem__, reverse=True)
        upper = start
        for lower in (*conditioned, stop):  # only relevance that passes every conditioned step goes on
            relevance = _walk(self.network, self.region(upper, lower), relevance, lower, masks, channels, backward)
            if relevance is None:  # nothing reaches ``lower`` (a gate's branch)
                relevance = self.value(lower).new_zeros(n, *self.value(lower).shape[1:])
            upper = lower
        if stop != INPUT and stop in masks:
            relevance = relevance * masks[stop]
        return relevance if reduce is None else reduce(relevance)

    def _lrp_step(self, image: int | None) -> Backward:
        def step(name: str, relevance: Tensor, keep: Tensor | None) -> tuple:
            if name not in self.propagators:
                raise ModelError(self.network.unsupported(name))
            try:
                parts = self.propagators[name](relevance, image, keep)
            except LRPWidgetsError:
                raise
            except Exception as error:  # noqa: BLE001 — said in one line, naming the step
                raise ModelError(f"relevance cannot pass step '{name}' ({self.network.by_name[name].operation}): "
                                 f"{_first_line(error)}") from None
            return parts if isinstance(parts, tuple) else (parts,)
        return step


def _walk(network: Network, region: list[str], relevance: Tensor, stop: str, masks: Mapping[str, Tensor],
          channels: Mapping[str, Tensor], backward: Backward, record: dict[str, Tensor] | None = None) -> Tensor | None:
    """Relevance from the output of ``region[0]`` through the region (reverse forward order) to ``stop``."""
    inside = set(region) | {stop}
    pending = {region[0]: relevance}
    indices = torch.arange(relevance.shape[0], device=relevance.device)
    for name in region:
        relevance = pending.pop(name, None)
        if relevance is None:
            continue
        if name in masks:
            relevance = relevance * masks[name]
        keep = channels.get(name)
        step = network.by_name[name]
        if keep is not None and not step.weighted:
            kept = relevance[indices, keep]  # other steps read every channel: zero the rest
            relevance = torch.zeros_like(relevance)
            relevance[indices, keep] = kept
        if record is not None:
            record[name] = relevance
        for source, part in zip(step.inputs, backward(name, relevance, keep)):
            if part is not None and source in inside:
                pending[source] = part if source not in pending else pending[source] + part
    return pending.get(stop)


def channels_first(values: Tensor) -> Tensor:
    """Tokens (N, T, D) as (N, D, T); anything else as it is."""
    return values.transpose(1, 2) if values.dim() == 3 else values


def channel_totals(values: Tensor) -> Tensor:
    """Each channel's values summed over space or tokens: (N, C)."""
    values = channels_first(values)
    return values.flatten(2).sum(2) if values.dim() > 2 else values


def patch_grid(tokens: int) -> tuple[int, int, int] | None:
    """(leading tokens, h, w) of a token sequence that ends with a square grid of patches after at most a few
    leading tokens (a ViT's class token); ``None`` for any other."""
    side = int(tokens ** 0.5)
    return (tokens - side * side, side, side) if side > 1 and tokens - side * side <= 4 else None


def _first_line(error: BaseException) -> str:
    return ((str(error).strip().splitlines() or [type(error).__name__])[0])[:200]


class _Applied(nn.Module):
    """A step that is a function call, as a module for its rule."""

    def __init__(self, function: Callable[[Tensor], Tensor]):
        super().__init__()
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)


class Explainer:
    """LRP for one model and composite; ``explain`` returns an :class:`Explanation`.

    ``model``: any ``nn.Module`` that torch.fx can trace (or a :class:`LoadedModel`); the explanation runs in
    eval semantics (no dropout, batch norm with its running statistics) whatever the module's mode.
    """

    def __init__(self, model: nn.Module | LoadedModel, composite: Composite | str = "paper"):
        module = model.module if isinstance(model, LoadedModel) else model
        if not isinstance(module, nn.Module):
            raise ModelError(f"a model must be a torch.nn.Module, not {type(module).__name__}")
        self.module = module
        self.network = trace(module)
        self.composite = get_composite(composite) if isinstance(composite, str) else composite
        first = next((step.module for step in self.network.steps if isinstance(step.module, nn.Conv2d)), None)
        channels = first.in_channels if first is not None else None
        if isinstance(model, LoadedModel) and self.composite.bounds is None:  # z^B: the model's own pixel range
            if channels is not None and len(model.mean) != channels:
                raise ModelError(f"the model's mean and std have {len(model.mean)} values but its first convolution "
                                 f"takes {channels} channels")
            self.composite = replace(self.composite, bounds=pixel_bounds(model.mean, model.std))
        elif self.composite.bounds is None and channels not in (None, 3):
            self.composite = replace(self.composite, bounds="data")
            self.bounds_note = (f"z^B: ImageNet's 3-channel pixel range does not fit a {channels}-channel input; its "
                                "bounds are the input's own range (give the model's mean and std for exact bounds)")
        self.rules = self.composite.rules(self.network)
        parameter = next(module.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.checked = False  # the engine's logits compared with the model's own, on the first input

    bounds_note = ""

    def _input_channels(self) -> int | None:
        """The channels the first convolution takes, where the input goes straight to it."""
        first = self.network.steps[1] if len(self.network.steps) > 1 else None
        if first is not None and isinstance(first.module, nn.Conv2d) and first.inputs == (INPUT,):
            return first.module.in_channels
        return None

    def forward(self, x: Tensor, bind: bool | Collection[str] = False) -> tuple[
            dict[str, Tensor], dict[str, Any], dict[str, Propagator], dict[str, Any]]:
        """Every step's output, the forward state rules need (max-pool switches), each step's propagator
        (``bind``: all, or those of the steps named), and the outputs that are no tensors.

        A ReLU whose input is read by nothing else, and comes from a Conv2d/Linear layer or an addition,
        rectifies it in place, so both names share the rectified tensor; rules that need the
        pre-activation (LRP-ε) keep their own z.
        """
        env: dict = {INPUT: x}
        activations, states, propagators, others = {}, {}, {}, {}
        for step in self.network.steps[1:]:
            try:
                out = self._run(step, env, states)
            except LRPWidgetsError:
                raise
            except Exception as error:  # noqa: BLE001 — any failure is said in one line, naming the step
                raise ModelError(f"step '{step.name}' ({step.operation}) failed on an input of shape "
                                 f"{tuple(x.shape)}: {_first_line(error)}") from None
            env[step.name] = out
            (activations if isinstance(out, Tensor) else others)[step.name] = out
            if (bind is True or bind and step.name in bind) and step.op is not None and step.name in self.network.relevant:
                propagators[step.name] = self._bind(step, env, out, states.get(step.name))
        return activations, states, propagators, others

    def _run(self, step: Step, env: dict, states: dict) -> Any:
        op = step.op
        if op is None:
            return step.run(env)
        inputs = [env[name] for name in step.inputs]
        if op.in_place is not None and self._rectifies_in_place(step):
            return op.in_place(inputs[0])
        if op.run is None:
            return step.run(env)
        out = op.run(step.module, *inputs)
        if isinstance(out, tuple):
            out, states[step.name] = out
        return out

    def _bind(self, step: Step, env: dict, out: Tensor, state: Any) -> Propagator:
        inputs = tuple(env[name] for name in step.inputs)
        if step.role in ("sum", "concat", "gate", "attention") or not inputs:
            a = inputs
        elif not isinstance(inputs[0], Tensor):
            raise ModelError(f"relevance reaches step '{step.name}' ({step.operation}) from a value that is no tensor")
        else:
            a = inputs[0]
        layer = step.module if step.module is not None else _Applied(
            lambda x: step.run(ChainMap({step.inputs[0]: x}, env)))
        try:
            return self.rules[step.name].bind(layer, a, out if state is None else (out, state))
        except LRPWidgetsError:
            raise
        except Exception as error:  # noqa: BLE001
            raise ModelError(f"rule {self.rules[step.name]!r} cannot explain step '{step.name}' ({step.operation}): "
                             f"{_first_line(error)}") from None

    def _rectifies_in_place(self, step: Step) -> bool:
        source = self.network.by_name[step.inputs[0]]
        return source.role in ("weighted", "sum") and self.network.consumers[source.name] == [step.name]

    @torch.no_grad()
    def explain(self, x: Tensor, target: int | Sequence[int] | Tensor | None = None, stop: str = INPUT) -> Explanation:
        """Explain a batch ``x`` (N, C, H, W) for ``target`` (one class for all, one per image, or the top-1).

        ``stop``: a step all relevance passes (:meth:`~lrp_widgets.engine.network.Network.cuts`) where the backward
        pass ends, when nothing below it is wanted (the atlas's layers): the steps below get no relevance and no
        propagator."""
        x = self.check_input(x)
        if self.bounds_note:
            warnings.warn(self.bounds_note, stacklevel=2)
        if stop != INPUT and stop not in self.network.cuts:
            raise TargetError(f"the backward pass can only stop at a step all relevance passes, not '{stop}'")
        region = self.network.region(self.network.output, stop)
        activations, indices, propagators, others = self.forward(x, bind=True if stop == INPUT else set(region))
        logits = activations.get(self.network.output)
        if logits is None or logits.dim() != 2:
            shape = tuple(logits.shape) if logits is not None else type(others[self.network.output]).__name__
            raise ModelError(f"the model's output has shape {shape}: LRP here explains class scores (one row of "
                             "scores per image)")
        if not self.checked:
            self._check_fidelity(x, logits)
        targets = self._targets(target, logits)
        relevance = torch.zeros_like(logits)
        relevance.scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        explanation = Explanation(self.network, x, logits, targets, activations, {}, propagators, indices, others)
        relevances: dict[str, Tensor] = {}
        result = _walk(self.network, region, relevance, stop, {}, {}, explanation._lrp_step(None), relevances)
        relevances[stop] = result if result is not None else torch.zeros_like(explanation.value(stop))
        explanation.relevances = relevances
        return explanation

    def check_input(self, x: Any) -> Tensor:
        """The input on the model's device, or one line on what is wrong with it."""
        if not isinstance(x, Tensor):
            raise ImageError(f"the input must be a torch.Tensor of shape (N, C, H, W), not {type(x).__name__}")
        if not x.is_floating_point():
            raise ImageError(f"the input has dtype {x.dtype}: give floats, preprocessed as the model expects "
                             "(e.g. the model's transform, or x.float() / 255 and its normalisation)")
        channels = self._input_channels()
        if channels is not None:
            if x.dim() != 4:
                hint = ": add the batch dimension, x[None]" if x.dim() == 3 and x.shape[0] == channels else ""
                raise ImageError(f"the input has shape {tuple(x.shape)}; the model takes a batch (N, {channels}, H, W)"
                                 f"{hint}")
            if x.shape[1] != channels:
                raise ImageError(f"the input has {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''} but the model's "
                                 f"first convolution '{self.network.steps[1].name}' takes {channels}")
        if x.numel() == 0:
            raise ImageError(f"the input of shape {tuple(x.shape)} is empty: nothing to explain")
        x = x.to(self.device)
        if not torch.isfinite(x).all():
            raise ImageError("the input holds NaN or infinite values: nothing to explain")
        return x

    def _check_fidelity(self, x: Tensor, logits: Tensor) -> None:
        """The engine replays the traced graph: its logits must be the model's own on the first input, else
        the explanation would be of another function."""
        modes = [(module, module.training) for module in self.module.modules()]
        try:
            self.module.eval()
            expected = self.module(x[:1].clone())
        except Exception as error:  # noqa: BLE001 — the user's model failing on its own input, in one line
            raise ModelError(f"{type(self.module).__name__} fails on the input: {_first_line(error)}") from None
        finally:
            for module, mode in modes:
                module.train(mode)
        if not isinstance(expected, Tensor) or expected.shape != logits[:1].shape:
            raise ModelError(f"{type(self.module).__name__} returns {type(expected).__name__} where its traced graph "
                             f"returns a tensor of shape {tuple(logits[:1].shape)}")
        difference = float((expected - logits[:1]).abs().max())
        scale = max(float(expected.abs().max()), 1.0)
        if not difference <= 1e-3 * scale:
            raise ModelError(f"the traced graph of {type(self.module).__name__} computes other scores than the model "
                             f"(max difference {difference:.3g} of {scale:.3g}): an in-place change of a tensor read "
                             "elsewhere, or control flow that depends on the data; LRP here explains only what it "
                             "replays exactly")
        self.checked = True

    @staticmethod
    def _targets(target, logits: Tensor) -> Tensor:
        n, classes = logits.shape
        if target is None:
            return logits.argmax(1)
        values = target.flatten().tolist() if isinstance(target, Tensor) else (
            list(target) if isinstance(target, (list, tuple)) else [target])
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)), None)
        if bad is not None or not values:
            raise TargetError(f"target {bad!r} is not a class index: give an integer (or one per image)"
                              if values else "no target given: give a class index")
        targets = torch.as_tensor(values, device=logits.device).long()
        if targets.numel() == 1:
            targets = targets.expand(n)
        if targets.numel() != n:
            raise TargetError(f"{targets.numel()} targets for {n} images")
        bad = targets[(targets < 0) | (targets >= classes)]
        if bad.numel():
            raise TargetError(f"class index {int(bad[0])} out of range: the model has classes 0–{classes - 1}")
        return targets.clone()
