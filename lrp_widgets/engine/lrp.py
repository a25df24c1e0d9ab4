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

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ImageError, TargetError
from .composites import Composite, get_composite
from .network import WEIGHTED, Layer, layer_sequence
from .rules import Propagator

INPUT = "input"
#: The transient memory a batched propagation may take; more conditions are propagated in several batches.
PROPAGATION_BYTES = 64 * 2**20


@dataclass
class Explanation:
    """Activations and relevances at every layer of one batch, and the propagators that made them.

    ``activations[name]`` / ``relevances[name]`` are a layer's output and the relevance there;
    ``relevances["input"]`` is the input relevance. ReLU/Dropout layers share their input's relevance;
    a Conv2d/Linear layer followed by a ReLU shares the ReLU's (rectified) output.
    """

    layers: list[Layer]
    inputs: Tensor
    logits: Tensor
    targets: Tensor
    activations: dict[str, Tensor]
    relevances: dict[str, Tensor]
    propagators: dict[str, Propagator] = field(repr=False)
    maxpool_indices: dict[str, Tensor] = field(repr=False)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def weighted(self) -> list[str]:
        """The Conv2d/Linear layer names, input to output: the layers of the neuron graph."""
        return [layer.name for layer in self.layers if isinstance(layer.module, WEIGHTED)]

    @property
    def output_relevance(self) -> Tensor:
        """The logit of each explained class."""
        return self.logits.gather(1, self.targets[:, None])[:, 0]

    def relevance_sums(self) -> dict[str, Tensor]:
        """Σ relevance at every layer's output (and at the input), per image: the conservation table."""
        sums = {INPUT: self.relevances[INPUT].flatten(1).sum(1)}
        sums.update({name: self.relevances[name].flatten(1).sum(1) for name in self.names})
        return sums

    @property
    def nbytes(self) -> int:
        """The memory the explanation holds: activations, relevances, switches and the propagators' stored z."""
        tensors = [*self.activations.values(), *self.relevances.values(), *self.maxpool_indices.values(), self.inputs]
        tensors += [t for propagate in self.propagators.values() for t in getattr(propagate, "stored", ())]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())

    def input_of(self, name: str) -> Tensor:
        """The activation entering layer ``name``."""
        index = self.names.index(name)
        return self.inputs if index == 0 else self.activations[self.names[index - 1]]

    def propagate(self, relevance: Tensor, start: str, stop: str = INPUT, image: int = 0,
                  masks: Mapping[str, Tensor] | None = None, channels: Mapping[str, Tensor] | None = None,
                  reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Propagate a batch of relevances given at the output of layer ``start`` down to the output of
        ``stop`` (default: the input), for image ``image`` of the stored batch.

        ``masks[name]`` (broadcastable to the relevance there) multiplies the relevance at the output of
        that layer; ``channels[name]`` (one index per row) keeps only that channel there — the cheap
        path for single-neuron conditions. The relevance at ``start`` is masked too.

        Rows are propagated in batches whose transient buffers fit ``PROPAGATION_BYTES``; ``reduce``
        (e.g. a sum over space) is applied to each batch's result, so the full maps of all rows never
        exist at once.
        """
        masks, channels = masks or {}, channels or {}
        names = self.names
        first = names.index(start)
        last = -1 if stop == INPUT else names.index(stop)
        if last > first:
            raise TargetError(f"layer '{stop}' is above '{start}'")
        n = relevance.shape[0]
        # rows in batches whose transient buffers (~3 of the largest layer passed) fit PROPAGATION_BYTES
        largest = max((self.input_of(names[index])[0].numel() for index in range(first, last, -1)),
                      default=relevance[0].numel())
        size = max(1, PROPAGATION_BYTES // (3 * largest * relevance.element_size()))
        if n > size:
            def rows(values: Mapping[str, Tensor], part: slice) -> dict[str, Tensor]:
                return {k: v[part] if v.dim() and v.shape[0] == n else v for k, v in values.items()}
            result = None
            for part in (slice(i, i + size) for i in range(0, n, size)):
                done = self.propagate(relevance[part], start, stop, image, rows(masks, part), rows(channels, part), reduce)
                result = done.new_empty((n, *done.shape[1:])) if result is None else result
                result[part] = done
            return result
        indices = torch.arange(n, device=relevance.device)
        for index in range(first, last, -1):
            name = names[index]
            if name in masks:
                relevance = relevance * masks[name]
            keep = channels.get(name)
            if keep is not None and not isinstance(self.layers[index].module, WEIGHTED):
                kept = relevance[indices, keep]  # other layers read every channel: zero the rest
                relevance = torch.zeros_like(relevance)
                relevance[indices, keep] = kept
            relevance = self.propagators[name](relevance, image, keep)
        if stop != INPUT and stop in masks:
            relevance = relevance * masks[stop]
        return relevance if reduce is None else reduce(relevance)


class Explainer:
    """LRP for one model and composite; ``explain`` returns an :class:`Explanation`."""

    def __init__(self, model: nn.Module, composite: Composite | str = "paper"):
        self.layers = layer_sequence(model)
        self.names = [layer.name for layer in self.layers]
        self.composite = get_composite(composite) if isinstance(composite, str) else composite
        self.rules = self.composite.rules(self.layers)
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    def forward(self, x: Tensor, bind: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Propagator]]:
        """Every layer's output, the max-pool switches and (``bind``) each layer's propagator.

        A ReLU right after a Conv2d/Linear layer rectifies that layer's output in place, so both names
        share the rectified tensor; rules that need the pre-activation (LRP-ε) keep their own z.
        """
        activations, indices, propagators = {}, {}, {}
        previous = None
        for layer in self.layers:
            module, a = layer.module, x
            if isinstance(module, nn.ReLU):
                x = F.relu_(x) if isinstance(previous, WEIGHTED) else F.relu(x)
            elif isinstance(module, nn.MaxPool2d):
                x, switches = F.max_pool2d(x, module.kernel_size, module.stride, module.padding,
                                           module.dilation, module.ceil_mode, return_indices=True)
                indices[layer.name] = switches.int() if a[0, 0].numel() < 2**31 else switches  # half the bytes
            else:
                x = module(x)
            if bind:
                out = (x, indices[layer.name]) if layer.name in indices else x
                propagators[layer.name] = self.rules[layer.name].bind(module, a, out)
            activations[layer.name] = x
            previous = module
        return activations, indices, propagators

    @torch.no_grad()
    def explain(self, x: Tensor, target: int | Sequence[int] | Tensor | None = None) -> Explanation:
        """Explain a batch ``x`` (N, C, H, W) for ``target`` (one class for all, one per image, or the top-1)."""
        x = x.to(self.device)
        if not torch.isfinite(x).all():
            raise ImageError("the input holds NaN or infinite values: nothing to explain")
        activations, indices, propagators = self.forward(x, bind=True)
        logits = activations[self.layers[-1].name]
        targets = self._targets(target, logits)
        relevance = torch.zeros_like(logits)
        relevance.scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        relevances = {}
        for name in reversed(self.names):
            relevances[name] = relevance
            relevance = propagators[name](relevance)
        relevances[INPUT] = relevance
        return Explanation(self.layers, x, logits, targets, activations, relevances, propagators, indices)

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
