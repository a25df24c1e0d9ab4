"""Input relevance equals zennit's (and Captum's) on the same model, image and rules."""
import pytest
import torch

from lrp_widgets.engine import Epsilon, Explainer, get_composite
from .peers import captum_lrp, zennit_relevance

from .conftest import random_model

TOLERANCE = 1e-4  # × max |R|


def assert_equal_relevance(ours: torch.Tensor, peer: torch.Tensor) -> None:
    scale = peer.abs().max()
    assert scale > 0
    error = float((ours - peer).abs().max() / scale)
    assert error <= TOLERANCE, f"max |difference| = {error:.2e} × max |R|"


@pytest.mark.parametrize("preset", ["paper", "epsilon", "zplus"])
def test_vgg16_equals_zennit(vgg16, castle, preset):
    ours = Explainer(vgg16, preset).explain(castle).relevances["input"]
    assert_equal_relevance(ours, zennit_relevance(vgg16, castle, preset))


def test_vgg16_other_class_equals_zennit(vgg16, castle):
    ours = Explainer(vgg16).explain(castle, target=483).relevances["input"]
    assert_equal_relevance(ours, zennit_relevance(vgg16, castle, target=483))


def test_vgg16_average_max_pool_differs_from_winner_takes_all(vgg16, castle):
    winner = Explainer(vgg16).explain(castle).relevances["input"]
    average = Explainer(vgg16, get_composite("paper", maxpool="average")).explain(castle).relevances["input"]
    assert (winner - average).abs().max() > 0.05 * winner.abs().max()


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg19", "vgg16_bn"])
def test_other_vggs_equal_zennit(name, castle):
    model = random_model(name, seed=1)
    ours = Explainer(model).explain(castle).relevances["input"]
    assert_equal_relevance(ours, zennit_relevance(model, castle))


def test_epsilon_equals_captum(castle):
    model = random_model("vgg11", seed=2)
    ours = Explainer(model, "epsilon").explain(castle).relevances["input"]
    assert_equal_relevance(ours, captum_lrp(model, castle, epsilon=0.25))


def test_paper_schedule_on_vgg16_is_the_briefs(vgg16):
    rules = Explainer(vgg16).rules
    names = {type(rule).__name__: [] for rule in rules.values()}
    for name, rule in rules.items():
        names[type(rule).__name__].append(name)
    assert names["ZBox"] == ["features.0"]
    assert names["Gamma"] == [f"features.{i}" for i in (2, 5, 7, 10, 12, 14)]
    assert {rules[f"features.{i}"].epsilon for i in (17, 19, 21, 24, 26, 28)} == {0.25}
    assert {rules[f"classifier.{i}"].epsilon for i in (0, 3, 6)} == {0.0}
    assert {rules[f"features.{i}"].gamma for i in (2, 5, 7, 10, 12, 14)} == {0.25}


def test_conservation_table_on_vgg16(vgg16, castle):
    explanation = Explainer(vgg16).explain(castle)
    sums = explanation.relevance_sums()
    assert set(sums) == {"input", *explanation.names}
    logits = vgg16(castle)  # the model's own forward pass, apart from the explainer's
    top = logits[0].argmax()
    assert int(explanation.targets[0]) == int(top)
    start = explanation.relevances["classifier.6"][0]
    assert torch.count_nonzero(start) == 1 and torch.isclose(start[top], logits[0, top], rtol=1e-5)
    # winner-takes-all max-pooling conserves exactly
    torch.testing.assert_close(sums["features.30"], sums["avgpool"], rtol=1e-4, atol=1e-6)


def test_lrp0_without_biases_conserves_the_logit_through_every_layer(castle):
    """With zero biases, LRP-0 on every weighted layer and winner-takes-all pooling, Σ R is the same at
    every layer: a rule that loses or invents relevance anywhere breaks this."""
    model = random_model("vgg11")
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    weighted = [name for name, module in model.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    composite = get_composite("epsilon", overrides={name: Epsilon(0.0) for name in weighted})
    explanation = Explainer(model, composite).explain(castle)
    sums = explanation.relevance_sums()
    logit = explanation.output_relevance
    for name, total in sums.items():
        torch.testing.assert_close(total, logit, rtol=2e-3, atol=0, msg=f"Σ R at {name}")
