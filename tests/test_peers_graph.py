"""The traced engine equals the peers on torchvision models with a graph (random weights, biases and batch
norm statistics, the castle image): zennit's input relevance on ResNet-18/50, DenseNet-121 and MobileNet V2,
zennit-crp's conditional heatmaps and Captum's deconvnet on ResNet-50. The zennit side gets our rules step by
step, and canonizers where our tracer folds batch norms or hooks functional operations (tests/peers.py)."""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from lrp_widgets.analysis.heatmaps import conditional_relevance, neuron_relevance
from lrp_widgets.engine import Explainer, trace
from lrp_widgets.engine.deconv import deconvolve

from .conftest import random_model
from .peers import (captum_deconvolution, crp_heatmaps, densenet_merges, first_difference, peer_copy, strongest,
                    zennit_composite, zennit_relevances)
from .test_peers_lrp import TOLERANCE, assert_equal_relevance

MODELS = ("resnet18", "resnet50", "densenet121", "mobilenet_v2")
CLIPPING = "mobilenet_v2-clipping"


def clipping_mobilenet() -> nn.Module:
    """MobileNet V2 whose ReLU6s clip: with random_model's statistics no activation reaches 6, so the batch
    norms before the ReLU6s get 3 more bias (a fifth to a half of the expansions' inputs then exceed 6)."""
    model = random_model("mobilenet_v2")
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, Conv2dNormActivation):  # conv, batch norm, ReLU6
                block[1].bias.add_(3.0)
    return model


@pytest.fixture(scope="module")
def model():
    cache = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            cache[name] = clipping_mobilenet() if name == CLIPPING else random_model(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def resnet50(model):
    return model("resnet50")


@pytest.fixture(scope="module")
def explanation(resnet50, castle):
    return Explainer(resnet50, "paper").explain(castle)


CASES = [(name, preset) for preset in ("paper", "epsilon-gamma-box") for name in MODELS]
CASES += [("resnet18", "epsilon-plus-flat"), ("mobilenet_v2", "epsilon-plus-flat"), (CLIPPING, "paper")]


@pytest.mark.parametrize("name, preset", CASES)
def test_input_relevance_equals_zennit(model, castle, name, preset):
    network = model(name)
    explanation = Explainer(network, preset).explain(castle)
    ours = explanation.relevances["input"]
    theirs, _ = zennit_relevances(network, castle, preset)
    error = float((ours - theirs).abs().max() / theirs.abs().max())
    if error > TOLERANCE:  # say where: the first step (output down) whose relevance differs
        pytest.fail(f"{name}, {preset}: {error:.2e} × max |R|; "
                    f"{first_difference(explanation, network, preset, TOLERANCE)}")
    assert_equal_relevance(ours, theirs)
    if name == CLIPPING:  # the ReLU6s did clip
        relu6 = [step.name for step in explanation.network.steps if isinstance(step.module, nn.ReLU6)]
        assert sum(bool((explanation.activations[step] == 6).any()) for step in relu6) >= 10


def test_zennit_merges_the_batch_norms_our_tracer_folds(model, castle):
    """The canonizers merge exactly the batch norms that our tracer folds (DenseNet's pairs come from its module
    structure, the others from module order), and the canonized copies compute the models' logits."""
    for name in MODELS:
        network = model(name)
        batch_norms = {n for n, m in network.named_modules() if isinstance(m, nn.BatchNorm2d)}
        folded = batch_norms - {step.name for step in trace(network).steps if isinstance(step.module, nn.BatchNorm2d)}
        copy = peer_copy(network)
        with zennit_composite(copy, "paper").context(copy) as canonized:
            emptied = {n for n, m in canonized.named_modules() if isinstance(m, nn.BatchNorm2d) and m.eps == 0
                       and bool((m.running_var == 1).all()) and bool((m.weight == 1).all())}
            logits = network(castle)
            torch.testing.assert_close(canonized(castle), logits, rtol=0, atol=1e-5 * float(logits.abs().max()))
        assert emptied == folded, name
        if name == "densenet121":
            assert len(densenet_merges(network)) == len(folded) == 59  # the stem and 58 dense layers


def assert_close_to(ours: torch.Tensor, peer: torch.Tensor) -> None:
    assert peer.abs().max() > 0
    error = float((ours - peer).abs().max() / peer.abs().max())
    assert error <= TOLERANCE, f"{error:.2e} × max |R|"


# zennit-crp conditions are on module names: a conv (its batch norm merged, as our step computes it) or a
# residual block, whose output is our block output step (layer2.1 → layer2.1.relu@2). The block's last ReLU
# module would not do: ResNet calls it three times per block, and crp would mask every call.
@pytest.mark.parametrize("layer", ["layer3.2.conv2", "layer4.2.conv3", "layer2.1"])
def test_resnet50_neuron_conditions_equal_crp(resnet50, castle, explanation, layer):
    step = explanation.network.resolve(layer)
    assert step == ("layer2.1.relu@2" if layer == "layer2.1" else layer)
    channels = strongest(explanation.relevances[step], 2)
    target = int(explanation.targets[0])
    ours = neuron_relevance(explanation, step, channels).sum(1)
    assert_close_to(ours, crp_heatmaps(resnet50, castle, [{"y": [target], layer: [c]} for c in channels]))


def test_resnet50_path_conditions_equal_crp(resnet50, castle, explanation):
    """A path of channels at a conv in layer3.2 and at the outputs of blocks layer3.1 and layer2.3 (one channel
    each), and the union of two per layer. crp keeps only relevance through each condition layer; the block
    outputs below the top are on every way down, so our masks select the same (crp's default exclude_parallel
    drops relevance that bypasses a lower condition layer; ours would keep it)."""
    network = explanation.network
    layers = ["layer3.2.conv2", "layer3.1", "layer2.3"]
    channels = {layer: strongest(explanation.relevances[network.resolve(layer)], 2) for layer in layers}
    target = int(explanation.targets[0])
    ours = conditional_relevance(explanation, {network.resolve(layer): c[:1] for layer, c in channels.items()}).sum(1)
    assert_close_to(ours, crp_heatmaps(resnet50, castle, [{"y": [target], **{k: c[:1] for k, c in channels.items()}}]))
    ours = conditional_relevance(explanation, {network.resolve(layer): c for layer, c in channels.items()}).sum(1)
    assert_close_to(ours, crp_heatmaps(resnet50, castle, [{"y": [target], **channels}]))


# Captum's module for our step: a conv's batch norm (our step computes bn2(conv2(x))), or the block.
@pytest.mark.parametrize("mode", ["map", "max"])
@pytest.mark.parametrize("layer, module", [("layer3.2.conv2", "layer3.2.bn2"), ("layer2.1", "layer2.1")])
def test_resnet50_deconvolution_equals_captum(resnet50, castle, explanation, layer, module, mode):
    step = explanation.network.resolve(layer)
    out = explanation.activations[step][0]
    channel = int(out.reshape(out.shape[0], -1).amax(1).argmax())  # never a dead channel
    ours = deconvolve(explanation, step, [channel], mode=mode)
    assert_close_to(ours, captum_deconvolution(resnet50, module, channel, mode)(castle))


def test_resnet50_conditions_inside_blocks_equal_crp(resnet50, castle, explanation):
    """A lower condition on a conv inside a block: the relevance that bypasses it through the shortcut is
    dropped, as crp's default (exclude_parallel) does."""
    target = int(explanation.targets[0])
    neurons = {"layer3.2.conv2": [31], "layer3.1.conv1": [138]}
    ours = conditional_relevance(explanation, neurons).sum(1)
    assert_close_to(ours, crp_heatmaps(resnet50, castle, [{"y": [target], **neurons}]))
