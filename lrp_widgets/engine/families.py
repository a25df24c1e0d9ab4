"""Model families: the torchvision names the CLI and the app offer, how a network's family is recognised,
the neuron graph's default layers (each family's blocks) and readable layer names.

>>> from torchvision.models import resnet18
>>> from lrp_widgets.engine.network import trace
>>> network = trace(resnet18())
>>> family_of(network.model).name, graph_layers(network)[:2], display_names(network)["layer1.0.relu@1"]
('ResNet', ['layer1.0.relu@1', 'layer1.1.relu@1'], 'layer1.0')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .network import Network


def _children(parent: str) -> Callable[[nn.Module], list[str]]:
    """Every child of ``parent`` (MobileNet's and EfficientNet's ``features.N``)."""
    return lambda model: [f"{parent}.{name}" for name, _ in model.get_submodule(parent).named_children()]


def _of_type(*kinds: str) -> Callable[[nn.Module], list[str]]:
    """Every module of these classes, in module order (ResNet's blocks, ConvNeXt's CNBlocks …)."""
    return lambda model: [name for name, module in model.named_modules() if type(module).__name__ in kinds]


def _dense(model: nn.Module) -> list[str]:
    return [path for path in _children("features")(model) if path.split(".")[-1].startswith(("denseblock", "transition"))]


@dataclass(frozen=True)
class Family:
    """A family: its display name, torchvision model names, the classes its networks are made of, and the
    module paths of the default graph's blocks (``None``: every weighted layer relevance reaches)."""

    name: str
    models: tuple[str, ...]
    classes: tuple[str, ...]
    blocks: Callable[[nn.Module], list[str]] | None = None
    #: a block's readable name from its module path
    label: Callable[[str], str] = lambda path: path


_RESNET_BLOCKS = _of_type("BasicBlock", "Bottleneck")
_REGNETS = ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")

#: Every family, in the order the model picker lists them.
FAMILY_LIST: tuple[Family, ...] = (
    Family("VGG", ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"), ("VGG",)),
    Family("ResNet", ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"), ("ResNet",), _RESNET_BLOCKS),
    Family("ResNeXt", ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"), ("ResNet",), _RESNET_BLOCKS),
    Family("Wide ResNet", ("wide_resnet50_2", "wide_resnet101_2"), ("ResNet",), _RESNET_BLOCKS),
    Family("DenseNet", ("densenet121", "densenet169"), ("DenseNet",), _dense),
    Family("MobileNet", ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"), ("MobileNetV2", "MobileNetV3"),
           _children("features")),
    Family("EfficientNet", (*(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m",
                            "efficientnet_v2_l"), ("EfficientNet",), _children("features")),
    Family("ConvNeXt", ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), ("ConvNeXt",),
           _of_type("CNBlock")),
    Family("RegNet", (*(f"regnet_x_{size}" for size in _REGNETS), *(f"regnet_y_{size}" for size in _REGNETS)),
           ("RegNet",), _of_type("ResBottleneckBlock")),
    Family("MNASNet", ("mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"), ("MNASNet",),
           _of_type("_InvertedResidual")),
    Family("ShuffleNet", ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"),
           ("ShuffleNetV2",), _of_type("InvertedResidual")),
    Family("GoogLeNet", ("googlenet",), ("GoogLeNet",), _of_type("Inception")),
    Family("SqueezeNet", ("squeezenet1_0", "squeezenet1_1"), ("SqueezeNet",), _of_type("Fire")),
    Family("AlexNet", ("alexnet",), ("AlexNet",)),
    Family("ViT", ("vit_b_16", "vit_b_32", "vit_l_16"), ("VisionTransformer",), _of_type("EncoderBlock"),
           lambda path: "block " + path.rsplit("_", 1)[-1]),  # encoder.layers.encoder_layer_3 → block 3
)
#: Model names by family, as the picker shows them.
FAMILIES: dict[str, tuple[str, ...]] = {family.name: family.models for family in FAMILY_LIST}
MODELS = tuple(name for family in FAMILY_LIST for name in family.models)


def family_of(model: nn.Module) -> Family | None:
    """The torchvision family a module belongs to (``None`` for a network of the user's own)."""
    kind = type(model).__name__
    if type(model).__module__.startswith("torchvision.models"):
        return next((family for family in FAMILY_LIST if kind in family.classes), None)
    return None


def graph_blocks(network: Network) -> list[str]:
    """The module names of the default graph's blocks (none for VGG-like and custom models)."""
    family = family_of(network.model)
    if family is None or family.blocks is None:
        return []
    return [path for path in family.blocks(network.model)
            if path in network.blocks and network.blocks[path] in network.relevant]


def graph_layers(network: Network) -> list[str]:
    """The neuron graph's default layers, input to output: the family's blocks and the output, else every
    Conv2d/Linear layer, concatenation and sum that all relevance passes (never one inside a
    squeeze-and-excitation gate, nor one of two parallel branches: the layers form a chain).

    >>> from torch import nn
    >>> from lrp_widgets.engine.network import trace
    >>> graph_layers(trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))))
    ['0', '3']
    """
    blocks = graph_blocks(network)
    if blocks:
        return list(dict.fromkeys(network.blocks[path] for path in blocks)) + [network.output]
    return [step.name for step in network.steps if step.name in network.cuts
            and (step.weighted or step.role in ("sum", "concat"))]


def display_names(network: Network) -> dict[str, str]:
    """Readable names of steps: VGG's own (conv1_1 … conv5_3, pool1 … pool5, fc6 … fc8) for a VGG-like
    chain — convs in blocks ended by max-pooling, then linear layers —, block names for block outputs,
    else the step names.

    >>> from torchvision.models import vgg16
    >>> from lrp_widgets.engine.network import trace
    >>> names = display_names(trace(vgg16()))
    >>> names["features.0"], names["features.28"], names["features.30"], names["classifier.6"]
    ('conv1_1', 'conv5_3', 'pool5', 'fc8')
    """
    names = {name: name for name in network.names}
    # a step computing several blocks' outputs is named after the graph's block, else the innermost
    # (layer1.2, not layer1)
    names.update({step: block for block, step in sorted(network.blocks.items(), key=lambda item: len(item[0]))})
    family = family_of(network.model)
    names.update({network.blocks[block]: family.label(block) for block in graph_blocks(network)})
    if (family is not None and family.name not in ("VGG", "AlexNet")) or any(len(s.inputs) > 1 for s in network.steps):
        return names
    vgg, block, conv, linear = {}, 1, 0, 5
    for step in network.steps[1:]:
        if step.weighted and isinstance(step.module, nn.Conv2d):
            conv += 1
            vgg[step.name] = f"conv{block}_{conv}"
        elif step.op is not None and step.op.name == "max_pool":
            vgg[step.name] = f"pool{block}"
            block, conv = block + 1, 0
        elif step.weighted:
            linear += 1
            vgg[step.name] = f"fc{linear}"
    return {**names, **vgg} if any(name.startswith("pool") for name in vgg.values()) else names
