"""A model as the flat sequence of named layers that LRP walks through.

torchvision VGGs become ``features.*``, ``avgpool``, ``flatten``, ``classifier.*``; any
``nn.Sequential`` (nested or not) of supported layers is flattened by module name. Batch norm
is folded into the convolution before it, on copies: the user's model is never changed.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import VGG

from ..errors import ModelError

#: Layers LRP here knows how to explain.
SUPPORTED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout,
             nn.Linear, nn.Identity, nn.BatchNorm2d)
#: Layers that carry weights: the neurons of the graph live here.
WEIGHTED = (nn.Conv2d, nn.Linear)


class Layer(NamedTuple):
    name: str
    module: nn.Module


def layer_sequence(model: nn.Module) -> list[Layer]:
    """The model's layers in forward order, with batch norm folded into the preceding conv.

    >>> from torchvision.models import vgg11
    >>> [layer.name for layer in layer_sequence(vgg11())][-9:-5]
    ['avgpool', 'flatten', 'classifier.0', 'classifier.1']
    """
    if isinstance(model, VGG):
        layers = _flatten(model.features, "features") + [Layer("avgpool", model.avgpool),
                                                          Layer("flatten", nn.Flatten())]
        layers += _flatten(model.classifier, "classifier")
    elif isinstance(model, nn.Sequential):
        layers = _flatten(model, "")
    else:
        raise ModelError(f"unsupported model {type(model).__name__}: lrp-widgets explains torchvision VGGs and "
                         "nn.Sequential CNNs of Conv2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, "
                         "Dropout and Linear")
    return _fold_batch_norms(layers)


def _flatten(module: nn.Module, prefix: str) -> list[Layer]:
    layers = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            layers += _flatten(child, full)
        elif isinstance(child, SUPPORTED):
            layers.append(Layer(full, child))
        else:
            raise ModelError(f"unsupported layer '{full}' ({type(child).__name__}): lrp-widgets supports "
                             + ", ".join(t.__name__ for t in SUPPORTED if t is not nn.BatchNorm2d))
    return layers


def _fold_batch_norms(layers: list[Layer]) -> list[Layer]:
    folded: list[Layer] = []
    for layer in layers:
        if isinstance(layer.module, nn.BatchNorm2d):
            if not folded or not isinstance(folded[-1].module, nn.Conv2d):
                raise ModelError(f"unsupported layer '{layer.name}' (BatchNorm2d): batch norm must follow a Conv2d "
                                 "to be folded into it")
            folded[-1] = Layer(folded[-1].name, fold_batch_norm(folded[-1].module, layer.module))
        else:
            folded.append(layer)
    return folded


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` (eval mode)."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None, None], requires_grad=False)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)
    return fused



def display_names(layers: list[Layer]) -> dict[str, str]:
    """Readable names of the weighted and pooling layers: VGG's own (conv1_1 … conv5_3, pool1 … pool5,
    fc6 … fc8) for a VGG-like sequence — convs in blocks ended by max-pooling, then linear layers — else
    the module names.

    >>> from torchvision.models import vgg16
    >>> names = display_names(layer_sequence(vgg16()))
    >>> names["features.0"], names["features.28"], names["features.30"], names["classifier.6"]
    ('conv1_1', 'conv5_3', 'pool5', 'fc8')
    """
    names, block, conv, linear = {}, 1, 0, 5
    for layer in layers:
        if isinstance(layer.module, nn.Conv2d):
            conv += 1
            names[layer.name] = f"conv{block}_{conv}"
        elif isinstance(layer.module, nn.MaxPool2d):
            names[layer.name] = f"pool{block}"
            block, conv = block + 1, 0
        elif isinstance(layer.module, nn.Linear):
            linear += 1
            names[layer.name] = f"fc{linear}"
    if not any(name.startswith("pool") for name in names.values()):
        return {layer.name: layer.name for layer in layers}
    return names
