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

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ImageError, ModelError, TargetError
from .composites import Composite, get_composite, pixel_bounds
from .models import LoadedModel
from .network import INPUT, Add, Cat, Gate, Network, Step, trace
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
    names: :mod:`~lrp_widgets.engine.network`); ``relevances["input"]`` is the input relevance. ReLU,
    Dropout and an unfolded batch norm pass relevance unchanged; a Conv2d/Linear layer or a residual
    addition whose only reader is a ReLU shares the ReLU's (rectified) output.
    """

    network: Network
    inputs: Tensor
    logits: Tensor
    targets: Tensor
    activations: dict[str, Tensor]
    relevances: dict[str, Tensor]
    propagators: dict[str, Propagator] = field(repr=False)
    maxpool_indices: dict[str, Tensor] = field(repr=False)

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
        """The neuron graph's default layers that have feature maps: where Algorithm 1 and the sweep run."""
        return [name for name in self.network.graph_layers() if self.activations[name].dim() == 4]

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

    def input_of(self, name: str) -> Tensor:
        """The activation entering step ``name`` (its first input)."""
        return self.value(self.network.by_name[name].inputs[0])

    def region(self, start: str, stop: str = INPUT) -> list[str]:
        """The steps relevance passes from the output of ``start`` down to the output of ``stop``, start first."""
        return self.network.region(start, stop)

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
        masks, channels = masks or {}, channels or {}
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
            parts = self.propagators[name](relevance, image, keep)
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


class Explainer:
    """LRP for one model and composite; ``explain`` returns an :class:`Explanation`.

    ``model``: any ``nn.Module`` that torch.fx can trace (or a :class:`LoadedModel`); the explanation runs in
    eval semantics (no dropout, batch norm with its running statistics) whatever the module's mode.
    """

    def __init__(self, model: nn.Module | LoadedModel, composite: Composite | str = "paper"):
        module = model.module if isinstance(model, LoadedModel) else model
        self.network = trace(module)
        self.composite = get_composite(composite) if isinstance(composite, str) else composite
        if isinstance(model, LoadedModel) and self.composite.bounds is None:  # z^B: the model's own pixel range
            self.composite = replace(self.composite, bounds=pixel_bounds(model.mean, model.std))
        self.rules = self.composite.rules(self.network)
        parameter = next(module.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    def forward(self, x: Tensor, bind: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Propagator]]:
        """Every step's output, the max-pool switches and (``bind``) each step's propagator.

        A ReLU whose input is read by nothing else, and comes from a Conv2d/Linear layer or an addition,
        rectifies it in place, so both names share the rectified tensor; rules that need the
        pre-activation (LRP-ε) keep their own z.
        """
        network = self.network
        env: dict = {INPUT: x}
        activations, indices, propagators = {}, {}, {}
        for step in network.steps[1:]:
            module = step.module
            a = env[step.inputs[0]] if step.inputs else None
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                in_place = self._rectifies_in_place(step)
                if isinstance(module, nn.ReLU):
                    out = F.relu_(a) if in_place else F.relu(a)
                else:
                    out = F.hardtanh_(a, 0.0, 6.0) if in_place else F.hardtanh(a, 0.0, 6.0)
            elif isinstance(module, nn.MaxPool2d):
                out, switches = F.max_pool2d(a, module.kernel_size, module.stride, module.padding,
                                             module.dilation, module.ceil_mode, return_indices=True)
                indices[step.name] = switches.int() if a[0, 0].numel() < 2**31 else switches  # half the bytes
            elif isinstance(module, nn.BatchNorm2d):  # eval semantics, whatever the module's mode
                out = F.batch_norm(a, module.running_mean, module.running_var, module.weight, module.bias,
                                   False, 0.0, module.eps)
            elif isinstance(module, (nn.Dropout, nn.Identity)):
                out = a
            else:
                out = step.run(env)
            env[step.name] = out
            if isinstance(out, Tensor):
                activations[step.name] = out
            if bind and module is not None:
                inputs = tuple(env[name] for name in step.inputs) if isinstance(module, (Add, Cat, Gate)) else a
                bound = (out, indices[step.name]) if step.name in indices else out
                propagators[step.name] = self.rules[step.name].bind(module, inputs, bound)
        return activations, indices, propagators

    def _rectifies_in_place(self, step: Step) -> bool:
        source = self.network.by_name[step.inputs[0]]
        return (source.name != INPUT and isinstance(source.module, (nn.Conv2d, nn.Linear, Add))
                and self.network.consumers[source.name] == [step.name])

    @torch.no_grad()
    def explain(self, x: Tensor, target: int | Sequence[int] | Tensor | None = None) -> Explanation:
        """Explain a batch ``x`` (N, C, H, W) for ``target`` (one class for all, one per image, or the top-1)."""
        x = x.to(self.device)
        if not torch.isfinite(x).all():
            raise ImageError("the input holds NaN or infinite values: nothing to explain")
        activations, indices, propagators = self.forward(x, bind=True)
        logits = activations[self.network.output]
        if logits.dim() != 2:
            raise ModelError(f"the model's output has shape {tuple(logits.shape)}: LRP here explains class scores "
                             "(one row of scores per image)")
        targets = self._targets(target, logits)
        relevance = torch.zeros_like(logits)
        relevance.scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        explanation = Explanation(self.network, x, logits, targets, activations, {}, propagators, indices)
        region = explanation.region(self.network.output)
        relevances: dict[str, Tensor] = {}
        result = _walk(self.network, region, relevance, INPUT, {}, {}, explanation._lrp_step(None), relevances)
        relevances[INPUT] = result if result is not None else torch.zeros_like(x)
        explanation.relevances = relevances
        return explanation

    @staticmethod
    def _targets(target, logits: Tensor) -> Tensor:
        n, classes = logits.shape
        if target is None:
            return logits.argmax(1)
        targets = torch.as_tensor(target, device=logits.device).long().flatten()
        if targets.numel() == 1:
            targets = targets.expand(n)
        if targets.numel() != n:
            raise TargetError(f"{targets.numel()} targets for {n} images")
        bad = targets[(targets < 0) | (targets >= classes)]
        if bad.numel():
            raise TargetError(f"class index {int(bad[0])} out of range: the model has classes 0–{classes - 1}")
        return targets.clone()
