"""The same computation in the peers (zennit, zennit-crp, Captum), for tests and benchmarks.

zennit applies *our* composite's rules, step by step, through a ``NameMapComposite``: ``Epsilon(ε)`` →
``Epsilon(ε)`` (LRP-0 → ε = 1e-12, the same up to 0/0), ``Gamma(γ)`` → ``Gamma(γ)`` (zennit 0.4.6 fixes the
stabiliser at 1e-6, our default), ``ZBox`` → ``ZBox`` with the bounds expanded to the input, ``ZPlus``,
``Flat``, ``Pass`` → the same, average pools and additions → ``Norm``; ReLU, concatenation and
winner-takes-all max-pool need no rule (the gradient does them). Captum has no z^B rule: compare with it on
presets without one. What
our tracer does on its own (batch norm folding, residual additions and functional ops as steps)
zennit gets from canonizers:

* batch norm merged into the convolution before it — zennit's merge canonizers, with the emptied
  batch norm an exact identity (``eps = 0``: zennit leaves ``eps`` in place, so its "identity" computes
  ``x / sqrt(1 + eps)``, which the γ rule's 1e-6 stabiliser turns into up to 1 % of max |R| on VGG16-BN).
  VGG, ResNet and MobileNet V2 keep every such pair adjacent in module order (``SequentialMergeBatchNorm``);
  DenseNet does not (``conv1``/``norm2`` live in a ``_DenseLayer``, whose ``conv2`` is followed in
  module order by the next layer's ``norm1``, a batch norm after a concatenation), so its pairs are
  named from the torchvision module structure (``NamedMergeBatchNorm``);
* residual additions become zennit's ``Sum`` module: zennit's ``ResNetCanonizer`` for ResNet, and
  :class:`InvertedResidualCanonizer` for MobileNet V2's ``x + self.conv(x)``;
* the functional ``F.adaptive_avg_pool2d`` (and DenseNet's ``F.relu``) at the head become modules
  (:class:`HeadCanonizer`), so that zennit can put ``Norm`` (our proportional rule) on the pool.

Our step names translate to the canonized modules: ``<block>.add`` → ``<block>.canonizer_sum``,
``adaptive_avg_pool2d`` → ``canonizer_pool``, DenseNet's ``relu`` → ``canonizer_relu``. Concatenation
(split), flatten and winner-takes-all max-pooling need no rule: the gradient does them.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.densenet import DenseNet, _DenseLayer
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from torchvision.models.resnet import ResNet
from zennit import rules as z
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.composites import NameMapComposite
from zennit.layer import Sum
from zennit.torchvision import ResNetCanonizer

from lrp_widgets.engine.composites import Composite, get_composite
from lrp_widgets.engine.network import trace
from lrp_widgets.engine.rules import (Epsilon, Flat, FrozenScale, Gamma, Norm, Pass, Proportional, Moves, Split, WinnerTakesAll,
                                      ZBox, ZPlus)


def peer_copy(model: nn.Module) -> nn.Module:
    """A copy without in-place activations (zennit's and crp's hooks need them; MobileNet's ReLU6 is in place)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return model


class _Exact:
    """A merge canonizer whose emptied batch norm is an exact identity (``eps = 0``), its eps restored on removal."""

    def register(self, linears, batch_norm):
        self.eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.eps


class ExactSequentialMergeBatchNorm(_Exact, SequentialMergeBatchNorm):
    pass


class ExactNamedMergeBatchNorm(_Exact, NamedMergeBatchNorm):
    pass


class ExactResNetCanonizer(ResNetCanonizer):
    """zennit's ``ResNetCanonizer`` (``Sum`` modules in the blocks) with the exact batch norm merge."""

    def __init__(self):
        super().__init__()
        merge, *rest = self.canonizers
        assert type(merge) is SequentialMergeBatchNorm
        self.canonizers = (ExactSequentialMergeBatchNorm(), *rest)


class InvertedResidualCanonizer(AttributeCanonizer):
    """MobileNet V2's residual ``x + self.conv(x)`` through zennit's ``Sum``, as zennit's ResNet canonizers do."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(block, x):
        return block.canonizer_sum(torch.stack([x, block.conv(x)], dim=-1))

    def copy(self):
        return self.__class__()


class HeadCanonizer(AttributeCanonizer):
    """MobileNet V2's and DenseNet's head with modules for the functional ``relu`` and ``adaptive_avg_pool2d``."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, MobileNetV2):
            return {"forward": cls.mobilenet_forward.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1))}
        if isinstance(module, DenseNet):
            return {"forward": cls.densenet_forward.__get__(module), "canonizer_relu": nn.ReLU(),
                    "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1))}
        return None

    @staticmethod
    def mobilenet_forward(net, x):
        return net.classifier(torch.flatten(net.canonizer_pool(net.features(x)), 1))

    @staticmethod
    def densenet_forward(net, x):
        return net.classifier(torch.flatten(net.canonizer_pool(net.canonizer_relu(net.features(x))), 1))

    def copy(self):
        return self.__class__()


def densenet_merges(model: nn.Module) -> list[tuple[list[str], str]]:
    """DenseNet's (convolution, batch norm) pairs from its module structure: the stem's ``conv0``/``norm0``
    and every dense layer's ``conv1``/``norm2`` (``norm1``, the transitions' ``norm`` and ``norm5`` follow a
    concatenation or a pooling: they stay)."""
    pairs = [(["features.conv0"], "features.norm0")]
    pairs += [([f"{name}.conv1"], f"{name}.norm2") for name, module in model.named_modules()
              if isinstance(module, _DenseLayer)]
    return pairs


def canonizers(model: nn.Module) -> list:
    if isinstance(model, ResNet):
        return [ExactResNetCanonizer()]
    if isinstance(model, DenseNet):
        return [ExactNamedMergeBatchNorm(densenet_merges(model)), HeadCanonizer()]
    if isinstance(model, MobileNetV2):
        return [ExactSequentialMergeBatchNorm(), InvertedResidualCanonizer(), HeadCanonizer()]
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):  # VGG-BN: conv, bn pairs in Sequentials
        return [ExactSequentialMergeBatchNorm()]
    return []


#: Our functional steps (the last part of their name) → the module the canonizers put in their place.
FUNCTIONAL = {"add": "canonizer_sum", "adaptive_avg_pool2d": "canonizer_pool", "relu": "canonizer_relu"}


def zennit_name(step: str, modules: Mapping[str, nn.Module]) -> tuple[str, int] | None:
    """The module of the (canonized) model computing our step, and which of its calls it is; ``None`` for
    a functional step the canonizers leave alone (concatenation, flatten)."""
    if step in modules:
        return step, 0
    base, _, call = step.partition("@")
    if base in modules:
        return base, int(call)
    scope, _, op = step.rpartition(".")
    if op in FUNCTIONAL:
        return (f"{scope}.{FUNCTIONAL[op]}" if scope else FUNCTIONAL[op]), 0
    return None


def _expand(value, shape) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32)
    return t[None, :, None, None].expand(shape).clone() if t.dim() == 1 else t.expand(shape).clone()


def zennit_rule(rule, input_shape):
    """zennit's rule for one of ours; ``None`` where the gradient does the same (split, reshape, winner-takes-all)."""
    if isinstance(rule, (Gamma, Flat, Proportional, Norm)) or type(rule) in (ZPlus, ZBox):
        assert rule.stabilizer == 1e-6, f"zennit's {type(rule).__name__} stabilises with 1e-6, not {rule.stabilizer}"
    if isinstance(rule, Gamma):
        return z.Gamma(rule.gamma)
    if isinstance(rule, Epsilon):
        return z.Epsilon(rule.epsilon if rule.epsilon > 0 else 1e-12)  # LRP-0: ε ≈ 0, the same up to 0/0
    if isinstance(rule, ZBox):
        return z.ZBox(*(_expand(v, input_shape) for v in (rule.low, rule.high)))
    if isinstance(rule, ZPlus):
        return z.ZPlus()
    if isinstance(rule, Flat):
        return z.Flat()
    if isinstance(rule, (Proportional, Norm)):
        return z.Norm()
    if isinstance(rule, Pass):
        return z.Pass()
    if isinstance(rule, FrozenScale):  # an unfolded batch norm: LRP-ε on it, as zennit's Epsilon on the module
        return z.Epsilon(rule.stabilizer if rule.stabilizer > 0 else 1e-12)
    if isinstance(rule, (WinnerTakesAll, Moves, Split)):
        return None
    raise TypeError(f"no zennit rule for {rule!r}")


def name_map(model: nn.Module, composite: Composite | str, input_shape=(1, 3, 224, 224)):
    """``[([zennit module name], zennit rule), …]`` for our composite's rule at every step of the model."""
    composite = get_composite(composite) if isinstance(composite, str) else composite
    modules = dict(model.named_modules())
    rules: dict[str, tuple] = {}
    for step, rule in composite.rules(trace(model)).items():
        peer = zennit_rule(rule, input_shape)
        where = zennit_name(step, modules)
        if where is None:
            assert peer is None, f"step {step} ({rule!r}) has no module for zennit to hook"
            continue
        module, _ = where
        if module in rules:  # a module called several times (ResNet's relu): one rule for all its calls
            other = rules[module][0]
            assert _same(other, rule), f"{step}: {rule!r}, but {module} has {rules[module][0]!r}"
            continue
        rules[module] = (rule, peer)
    return [([module], peer) for module, (_, peer) in rules.items() if peer is not None]


def _same(a, b) -> bool:
    return type(a) is type(b) and (not dataclasses.is_dataclass(a) or repr(a) == repr(b))


def zennit_composite(model: nn.Module, composite: Composite | str = "paper", input_shape=(1, 3, 224, 224)):
    return NameMapComposite(name_map(model, composite, input_shape), canonizers=canonizers(model))


def zennit_relevances(model: nn.Module, x: torch.Tensor, composite: Composite | str = "paper",
                      target: int | None = None, record: Sequence[str] = ()) -> tuple[torch.Tensor, dict]:
    """zennit's input relevance, and the relevance at the output of every call of the (canonized) modules
    named in ``record`` (name → list, one per call in forward order)."""
    model = peer_copy(model)
    zennit = zennit_composite(model, composite, tuple(x.shape))
    recorded: dict[str, list] = {name: [] for name in record}
    with Gradient(model, zennit) as attributor:
        modules = dict(model.named_modules())
        missing = [names[0] for names, _ in zennit.name_map if names[0] not in modules]
        assert not missing, f"the canonized model lacks {missing[:5]}"
        handles = []
        for name in record:
            def keep(module, args, out, name=name):
                slot = len(recorded[name])
                recorded[name].append(None)
                if out.requires_grad:
                    out.register_hook(lambda grad: recorded[name].__setitem__(slot, grad.detach().clone()))
            handles.append(modules[name].register_forward_hook(keep))
        try:
            _, relevance = attributor(x, logit_output(target))
        finally:
            for handle in handles:
                handle.remove()
    return relevance, recorded


def first_difference(explanation, model: nn.Module, composite: Composite | str, tolerance: float) -> str:
    """Which step's output relevance first (from the output down) differs from zennit's by more than
    ``tolerance`` × max |R| there, and the last step above it that agrees: the diagnosis when the input
    relevances differ. Steps zennit has no module for (concatenations, flatten) are not compared."""
    modules = dict(peer_copy(model).named_modules())
    where = {}
    for step in explanation.names:
        found = zennit_name(step, modules)
        if found is not None and step in explanation.relevances:
            where[step] = found
    canonized = {module for module, _ in where.values()}
    _, recorded = zennit_relevances(model, explanation.inputs, composite, int(explanation.targets[0]),
                                    record=sorted(canonized))
    agreeing = "the output"
    for step in reversed(explanation.names):
        if step not in where:
            continue
        module, call = where[step]
        calls = recorded.get(module, [])
        if call >= len(calls) or calls[call] is None:
            continue
        ours, theirs = explanation.relevances[step], calls[call]
        scale = float(theirs.abs().max())
        error = float((ours - theirs).abs().max()) / scale if scale > 0 else float((ours - theirs).abs().max())
        if error > tolerance:
            return (f"relevance at the output of {step} (zennit: {module}, call {call}) differs by {error:.2e} × "
                    f"max |R| there, after agreeing at {agreeing}: the cause lies between them")
        agreeing = step
    return f"every recorded step agrees, down to {agreeing}: the difference arises below it"


def crp_heatmaps(model: nn.Module, x: torch.Tensor, conditions: list[dict], composite: Composite | str = "paper"
                 ) -> torch.Tensor:
    """zennit-crp's ``CondAttribution`` heatmaps (summed over colour channels), conditions on module names."""
    from crp.attribution import CondAttribution

    model = peer_copy(model)
    data = x.clone().requires_grad_()
    return CondAttribution(model)(data, conditions, zennit_composite(model, composite, tuple(x.shape))).heatmap


def strongest(values: torch.Tensor, k: int) -> list[int]:
    """The k channels with the largest total of ``values`` (1, C, …)."""
    return values[0].reshape(values.shape[1], -1).sum(1).topk(k).indices.tolist()


def logit_output(target: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Output relevance: the logit of the target (default: top-1), zeros elsewhere."""
    def output(logits: torch.Tensor) -> torch.Tensor:
        index = logits.argmax(1) if target is None else torch.full((logits.shape[0],), target)
        return torch.nn.functional.one_hot(index, logits.shape[1]) * logits

    return output


def zennit_relevance(model: nn.Module, x: torch.Tensor, composite: Composite | str = "paper",
                     target: int | None = None) -> torch.Tensor:
    """zennit's input relevance with our composite's rules."""
    model = peer_copy(model)
    with Gradient(model, zennit_composite(model, composite, tuple(x.shape))) as attributor:
        _, relevance = attributor(x, logit_output(target))
    return relevance


def captum_lrp(model: nn.Module, x: torch.Tensor, epsilon: float = 0.25, target: int | None = None):
    """Captum's LRP with LRP-ε on every conv/linear layer and winner-takes-all max-pool (ε ≈ 0 there);
    Captum's output relevance is the target's logit, as ours."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    model = peer_copy(model)
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

    model = peer_copy(model)
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


class FolderDataset(torch.utils.data.Dataset):
    """The readable images of an atlas folder as zennit-crp's ``FeatureVisualization`` takes them: (input, label)."""

    def __init__(self, folder, items, preprocess):
        from lrp_widgets.engine.images import open_image

        self.folder, self.items, self.preprocess, self.open = Path(folder), list(items), preprocess, open_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        return self.preprocess(self.open(self.folder / item.path)), item.label


def crp_references(model: nn.Module, dataset: FolderDataset, layers: Sequence[str], max_target: str, path: Path,
                   composite: Composite | str = "paper", batch_size: int = 8, k: int = 40) -> dict[tuple[str, str], tuple]:
    """zennit-crp's RelMax and ActMax (``abs_norm``) over ``dataset`` at module names ``layers``: (what, layer) →
    (image numbers, values, flat positions of the maxima), each (k, C), highest first (crp keeps 40)."""
    import numpy as np
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization

    model = peer_copy(model)
    visualization = FeatureVisualization(CondAttribution(model), dataset, {name: ChannelConcept() for name in layers},
                                         max_target=max_target, path=str(path))
    visualization.RelMax.SAMPLE_SIZE = visualization.ActMax.SAMPLE_SIZE = k
    visualization.run(zennit_composite(model, composite), 0, len(dataset), batch_size)
    found = {}
    for what, folder in (("relevance", "RelMax"), ("activation", "ActMax")):
        for layer in layers:
            stem = path / f"{folder}_{max_target}_normed" / f"{layer}_"
            found[what, layer] = tuple(np.load(f"{stem}{part}.npy") for part in ("data", "rel", "rf"))
    return found


@contextlib.contextmanager
def lxt_cp_lrp():
    """LXT's CP-LRP patches of torchvision's ViT (GELU: identity rule, LayerNorm: σ held constant, attention: weights
    held constant), undone on exit: they replace methods of torch.nn's classes for the whole process."""
    from lxt.efficient import monkey_patch
    from lxt.efficient.models.vit_torch import cp_LRP
    from torchvision.models import vision_transformer

    saved = {cls: (cls.forward, cls.__dict__.get("original_forward")) for cls in cp_LRP}
    monkey_patch(vision_transformer, cp_LRP)
    try:
        yield
    finally:
        for cls, (forward, original) in saved.items():
            cls.forward = forward
            if original is None:
                if "original_forward" in cls.__dict__:
                    del cls.original_forward
            else:
                cls.original_forward = original


def lxt_relevance(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """LXT's relevance at the input of a patched torchvision ViT under LRP-0: input × gradient of the target's logit."""
    with lxt_cp_lrp():
        x = x.clone().requires_grad_()
        with torch.enable_grad():
            model(x)[:, target].sum().backward()
    return (x * x.grad).detach()
