"""Every model by name traces, with the graph layers of its family; small ones explain for real; GoogLeNet's
ImageNet input transform moves into preprocessing exactly."""
import warnings

import pytest
import torch
import torchvision

from lrp_widgets.engine import FAMILIES, MODELS, Explainer, LoadedModel, load_model, trace
from lrp_widgets.engine.families import display_names, graph_layers
from lrp_widgets.engine.models import _builder, skeleton
from lrp_widgets.errors import ModelError

from .conftest import random_model, run_readme_example

# the first and last graph layer (the class) of each family's default graph, and how many there are
GRAPHS = {
    "vgg16": ("features.0", "classifier.6", 16),
    "alexnet": ("features.0", "classifier.6", 8),
    "resnet18": ("layer1.0.relu@1", "fc", 9),
    "resnet50": ("layer1.0.relu@2", "fc", 17),
    "resnet152": ("layer1.0.relu@2", "fc", 51),
    "resnext50_32x4d": ("layer1.0.relu@2", "fc", 17),
    "wide_resnet50_2": ("layer1.0.relu@2", "fc", 17),
    "densenet121": ("features.denseblock1.cat", "classifier", 8),
    "mobilenet_v2": ("features.0.2", "classifier.1", 20),
    "googlenet": ("inception3a.cat", "fc", 10),
    "squeezenet1_0": ("features.3.cat", "flatten", 9),  # the class scores come out of a flatten
    "efficientnet_b0": ("features.0.2", "classifier.1", 10),  # features.0 … features.8
    "convnext_tiny": ("features.1.0.add", "classifier.2", 19),  # 3 + 3 + 9 + 3 CNBlocks
    "mobilenet_v3_small": ("features.0.2", "classifier.3", 14),
    "regnet_y_400mf": ("trunk_output.block1.block1-0.activation", "fc", 17),  # 1 + 3 + 6 + 6 blocks
    "mnasnet0_5": ("layers.8.0.layers.6", "classifier.1", 17),
    "shufflenet_v2_x0_5": ("stage2.0.view@1", "fc", 17),  # 4 + 8 + 4 blocks, after their channel shuffle
}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_by_name_traces(name):
    network = trace(skeleton(_builder(name, pretrained=False)))  # structure only: no weights are made
    layers = graph_layers(network)
    assert layers[-1] == network.output and len(set(layers)) == len(layers)
    if name in GRAPHS:
        first, last, count = GRAPHS[name]
        assert (layers[0], layers[-1], len(layers)) == (first, last, count)
    family = next(family for family, names in FAMILIES.items() if name in names)
    names = display_names(network)
    if family == "ResNet":
        assert names[layers[0]] == "layer1.0"
    if family in ("EfficientNet", "MobileNet"):
        assert names[layers[0]] == "features.0"
    if family == "ConvNeXt":
        assert names[layers[0]] == "features.1.0"
    if family == "ShuffleNet":
        assert names[layers[0]] == "stage2.0"
    inside_gates = {step.name for step in network.steps if ".fc" in step.name or "se_layer" in step.name
                    or ".se." in step.name or "excitation" in step.name}
    assert not inside_gates.intersection(layers), name  # squeeze-and-excitation convs carry no relevance
    if family == "VGG":
        assert names[layers[0]] == "conv1_1"


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v2", "googlenet", "squeezenet1_1", "alexnet"])
def test_small_models_explain_with_their_logits(name, castle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(name, "random")
    explanation = Explainer(model, "epsilon-gamma-box").explain(castle)  # ε = 0.25 can zero tiny random logits
    torch.testing.assert_close(explanation.logits, model.module(castle), rtol=1e-4, atol=1e-4)
    relevance = explanation.relevances["input"]
    assert relevance.shape == castle.shape and torch.isfinite(relevance).all() and relevance.abs().max() > 0


def test_googlenet_imagenet_transform_moves_into_preprocessing(tmp_path, castle_image):
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True,
                                             init_weights=True).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    model = load_model("googlenet", str(path))
    assert model.mean == model.std == (0.5, 0.5, 0.5) and model.module.transform_input is False
    imagenet = LoadedModel.of(reference).preprocess(castle_image)[None]  # ImageNet normalisation, transformed inside
    with torch.no_grad():
        expected = reference(imagenet)
    torch.testing.assert_close(Explainer(model).explain(model.preprocess(castle_image)[None]).logits, expected,
                               rtol=1e-4, atol=1e-4)
    box = Explainer(model).rules["conv1.conv"]  # z^B's bounds: black and white in the model's normalisation
    torch.testing.assert_close(box.low, torch.full((3,), -1.0))
    torch.testing.assert_close(box.high, torch.ones(3))


def test_a_users_module_is_explained_and_a_non_module_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    model = LoadedModel.of(net, categories=["cat", "dog"])
    assert (model.name, model.weights, model.category(1)) == ("Sequential", "own", "dog")
    explanation = Explainer(model).explain(torch.rand(1, 3, 32, 32))
    assert explanation.relevances["input"].shape == (1, 3, 32, 32)
    with pytest.raises(ModelError, match="must be a torch.nn.Module, not dict"):
        LoadedModel.of({"weights": 1})


def test_random_weights_of_other_families_are_seeded(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, again = load_model("resnet18", "random"), load_model("resnet18", "random")
    assert torch.equal(first.module.conv1.weight, again.module.conv1.weight)
    assert not torch.equal(first.module.conv1.weight, random_model("resnet18", seed=5).conv1.weight)


def test_the_readme_example_of_a_resnet_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        namespace = run_readme_example("Any torchvision CNN by name")
    explanation = namespace["explanation"]
    block = explanation.relevances["layer3.2.relu@2"]
    assert block.shape == (1, 1024, 14, 14) and block.abs().max() > 0
