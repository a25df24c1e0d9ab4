"""The families of issue 17 (EfficientNet, MobileNet V3, ConvNeXt, RegNet X/Y, MNASNet, ShuffleNet V2) by name,
explained under "zero" with every bias zero: the input relevance sums to the logit, equals LRP-0 as a modified
gradient (tests/reference.py: SiLU/GELU/Hardswish slopes, squeeze-excitation gates and LayerNorm σ detached),
and the engine's logits are the model's. Also: their default graph layers, and one CLI run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from lrp_widgets.engine import MODELS, Explainer

from .conftest import CASTLE
from .reference import modified_gradient_lrp0, relative_error, zero_biases

MODERN = ("efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_small", "convnext_tiny", "regnet_y_400mf",
          "regnet_x_400mf", "mnasnet0_5", "shufflenet_v2_x0_5")
SIZE = 64
X = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def graph_layers(network) -> list[str]:
    """The default layers of the neuron graph (one place to follow a rename)."""
    from lrp_widgets.engine.families import graph_layers as layers
    return layers(network)


def family_model(name: str) -> nn.Module:
    """torchvision's seeded initialisation, made to carry a signal in float32: batch norm and LayerNorm scales
    random in [0.5, 1.5]; each batch norm's variance the second moment of its input on a batch holding X (a
    data-dependent initialisation, floored at a tenth of the mean: torchvision's variance 1 leaves logits of
    1e-14 on EfficientNet, its plain batch statistics leave EfficientNet V2 with a 2 % float32 error);
    ConvNeXt's layer scale 0.5 (not 1e-6: the blocks count); then every bias, batch norm running mean and
    LayerNorm bias zero."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    generator = torch.Generator().manual_seed(1)

    def calibrate(module, args):
        second = args[0].square().mean((0, 2, 3))
        module.running_var.copy_(second.clamp(min=0.1 * float(second.mean())))

    with torch.no_grad():
        hooks = []
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                hooks.append(module.register_forward_pre_hook(calibrate))
            if isinstance(getattr(module, "layer_scale", None), nn.Parameter):
                module.layer_scale.fill_(0.5)
        model(torch.cat([X, torch.randn(3, 3, SIZE, SIZE, generator=generator)]))
        for hook in hooks:
            hook.remove()
    return zero_biases(model).requires_grad_(False)


@pytest.fixture(scope="module")
def explained():
    """Each model, its explanation under "zero" and its modified-gradient reference, made once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model = family_model(name)
            explanation = Explainer(model, "zero").explain(X)
            cache[name] = model, explanation, modified_gradient_lrp0(model, X)
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODERN)
def test_zero_preset_conserves_and_equals_the_modified_gradient(explained, name):
    model, explanation, (logits, reference) = explained(name)
    expected = model(X)
    error = float((explanation.logits - expected).abs().max() / expected.abs().max())
    assert error <= 1e-4, f"logits differ from model(x) by {error:.2e} × max |logit|"
    target = int(explanation.targets[0])
    assert target == int(expected.argmax())
    logit = float(explanation.logits[0, target])
    total = float(explanation.relevances["input"].sum())
    assert abs(total / logit - 1) <= 1e-3, f"Σ R_input = {total:.6g}, logit {logit:.6g}"
    assert abs(float(reference.sum()) / logit - 1) <= 1e-3  # the reference conserves too
    difference = relative_error(explanation.relevances["input"], reference)
    assert difference <= 1e-3, f"input relevance differs from the modified gradient by {difference:.2e} × max |R|"


def test_the_families_are_offered_by_name():
    names = [*(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
             "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny", "convnext_small", "convnext_base",
             "convnext_large", "regnet_x_400mf", "regnet_y_400mf", "regnet_y_32gf", "mnasnet0_5", "mnasnet0_75",
             "mnasnet1_0", "mnasnet1_3", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
             "shufflenet_v2_x2_0", "vgg16", "resnet50", "densenet121", "mobilenet_v2", "googlenet"]
    missing = [name for name in names if name not in MODELS]
    assert not missing, f"not offered: {missing}"


@pytest.mark.parametrize("name", MODERN)
def test_default_graph_layers_skip_squeeze_excitation_gates(explained, name):
    model, explanation, _ = explained(name)
    network = explanation.network
    layers = graph_layers(network)
    assert layers and layers[-1] == network.output and len(set(layers)) == len(layers)
    assert all(layer in network.by_name for layer in layers)
    assert all(explanation.relevances[layer].abs().sum() > 0 for layer in layers), "a graph layer without relevance"
    gates = [path for path, module in model.named_modules() if isinstance(module, SqueezeExcitation)]
    inside = [layer for layer in layers if any(layer.startswith(gate + ".") for gate in gates)]
    assert not inside, f"graph layers inside squeeze-excitation gates: {inside}"
    if name in ("efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf"):
        assert gates, "the model has squeeze-excitation gates: the check above checked something"


def test_cli_explains_mobilenet_v3_small(tmp_path):
    from lrp_widgets.cli import main

    out = tmp_path / "out"
    assert main(["explain", str(CASTLE), "--model", "mobilenet_v3_small", "--weights", "random", "--preset", "zero",
                 "--out", str(out)]) == 0
    for name in ("relevance.npy", "summary.json", "heatmap.png", "graph.json"):
        assert (out / name).stat().st_size > 0, name
    relevance = np.load(out / "relevance.npy")
    assert relevance.shape == (3, 224, 224) and np.isfinite(relevance).all() and np.abs(relevance).sum() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["explained_class"]["index"] == summary["top5"][0]["index"]
