"""Each rule, conservation, pooling and masks on tiny networks whose answer is computed by hand."""
import pytest
import torch
from torch import nn

from lrp_widgets.engine import Epsilon, Explainer, Gamma, Pass, Proportional, WinnerTakesAll, ZBox, Zero, ZPlus
from lrp_widgets.engine.composites import Composite
from lrp_widgets.errors import ModelError, TargetError


def linear(weights, bias=None):
    layer = nn.Linear(len(weights[0]), len(weights), bias=bias is not None)
    layer.weight.data = torch.tensor(weights, dtype=torch.float32)
    if bias is not None:
        layer.bias.data = torch.tensor(bias, dtype=torch.float32)
    return layer


A = torch.tensor([[1.0, 2.0]])
LAYER = linear([[1.0, -1.0]], [0.5])  # z = 1 - 2 + 0.5 = -0.5
R = torch.tensor([[2.0]])


def run(rule, a=A, layer=LAYER, relevance=R):
    return rule.bind(layer, a, layer(a))(relevance)


def test_zero_rule_by_hand():
    # z = -0.5, s = -4, c = w·s = (-4, 4), R = a·c = (-4, 8)
    assert run(Zero()).tolist() == [[-4.0, 8.0]]


def test_epsilon_rule_adds_epsilon_with_the_sign_of_z():
    # z = -0.5 - 0.5 = -1, s = -2, R = (1·1·-2, 2·-1·-2) = (-2, 4)
    assert run(Epsilon(0.5)).tolist() == [[-2.0, 4.0]]


def test_epsilon_rule_treats_zero_as_positive():
    layer = linear([[1.0, -1.0]])
    out = Epsilon(1.0).bind(layer, torch.tensor([[1.0, 1.0]]), torch.zeros(1, 1))(torch.tensor([[3.0]]))
    assert out.tolist() == [[3.0, -3.0]]  # z = 0 + 1


def test_gamma_rule_by_hand():
    # ρ(w) = (1 + 0.5, -1), ρ(b) = 0.5·1.5 = 0.75; z = 1.5 - 2 + 0.75 = 0.25 (+1e-6)
    out = run(Gamma(0.5, stabilizer=0.0))
    assert torch.allclose(out, torch.tensor([[1.5 * 2 / 0.25, -2 * 2 / 0.25]]))


def test_zplus_rule_keeps_positive_contributions():
    layer = linear([[2.0, -1.0]], [1.0])
    a = torch.tensor([[1.0, -3.0]])
    # positive parts: a⁺w⁺ = 2, a⁻w⁻ = 3, b⁺ = 1 → z = 6; R = (2·2/6, 3·2/6)
    out = ZPlus(stabilizer=0.0).bind(layer, a, layer(a))(R)
    assert torch.allclose(out, torch.tensor([[2 / 3, 1.0]]))


def test_zplus_rule_on_a_linear_layer_over_positions_treats_each_position_alone():
    # a channels-last Linear (ConvNeXt's MLP): the (2, 2)-position map gives each position the hand-computed answer
    layer = linear([[2.0, -1.0]], [1.0])
    a = torch.tensor([[1.0, -3.0], [2.0, 0.0], [0.0, -1.0], [1.0, 1.0]]).reshape(1, 2, 2, 2)
    relevance = torch.tensor([2.0, 4.0, 1.0, 3.0]).reshape(1, 2, 2, 1)
    # z = a⁺w⁺ + a⁻w⁻ + b⁺: (2 + 3 + 1, 4 + 1, 1 + 1, 2 + 1) = (6, 5, 2, 3)
    expected = torch.tensor([[2 * 2 / 6, 3 * 2 / 6], [4 * 4 / 5, 0.0], [0.0, 1 * 1 / 2], [2 * 3 / 3, 0.0]])
    out = ZPlus(stabilizer=0.0).bind(layer, a, layer(a))(relevance)
    assert torch.allclose(out, expected.reshape(1, 2, 2, 2))


def test_zbox_rule_by_hand():
    layer = linear([[1.0, -2.0]], [5.0])
    x = torch.tensor([[0.5, 0.5]])
    low, high = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0])
    # z = x·w − l·w⁺ − h·w⁻ = (0.5 − 1) − 0 − (−2) = 1.5 (bias cancels)
    # R_i = (x_i w_i − l_i w⁺_i − h_i w⁻_i)/z · R = (0.5, −1 + 2)/1.5 · 2
    out = ZBox(low, high, stabilizer=0.0).bind(layer, x, layer(x))(R)
    assert torch.allclose(out, torch.tensor([[0.5 / 1.5 * 2, 1.0 / 1.5 * 2]]))


def test_winner_takes_all_and_average_max_pool_by_hand():
    a = torch.tensor([[[[1.0, 3.0], [2.0, 0.0]]]])
    pool = nn.MaxPool2d(2)
    out = nn.functional.max_pool2d(a, 2, return_indices=True)
    r = torch.tensor([[[[6.0]]]])
    assert WinnerTakesAll().bind(pool, a, out)(r).flatten().tolist() == [0.0, 6.0, 0.0, 0.0]
    average = Proportional(stabilizer=0.0).bind(pool, a, out[0])(r).flatten()
    assert torch.allclose(average, torch.tensor([1.0, 3.0, 2.0, 0.0]))


def test_winner_takes_all_adds_up_over_overlapping_windows():
    a = torch.tensor([[[[0.0, 5.0, 0.0]]]])
    pool = nn.MaxPool2d((1, 2), stride=1)
    out = nn.functional.max_pool2d(a, (1, 2), 1, return_indices=True)
    r = torch.tensor([[[[1.0, 2.0]]]])
    assert WinnerTakesAll().bind(pool, a, out)(r).flatten().tolist() == [0.0, 3.0, 0.0]


def tiny_cnn(bias: bool) -> nn.Sequential:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 5, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(5 * 2 * 2, 3, bias=bias)))
    return model.eval().requires_grad_(False)


def zero_everywhere(model):
    return Composite("zero", lambda convs, linears: {n: Zero() for n in convs + linears})


@pytest.mark.parametrize("maxpool", ["winner", "average"])
def test_conservation_is_exact_with_zero_biases_and_epsilon_zero(maxpool):
    model = tiny_cnn(bias=False)
    composite = zero_everywhere(model)
    composite.maxpool = maxpool
    x = torch.rand(2, 3, 8, 8) + 0.1
    explanation = Explainer(model, composite).explain(x)
    sums = explanation.relevance_sums()
    for name, value in sums.items():
        torch.testing.assert_close(value, explanation.output_relevance, rtol=1e-5, atol=1e-6, msg=name)


def test_biases_absorb_relevance_so_conservation_is_not_exact():
    model = tiny_cnn(bias=True)
    explanation = Explainer(model, zero_everywhere(model)).explain(torch.rand(1, 3, 8, 8))
    assert not torch.allclose(explanation.relevance_sums()["input"], explanation.output_relevance, rtol=1e-3)


def test_forward_of_the_explainer_equals_the_model():
    model = tiny_cnn(bias=True)
    x = torch.rand(2, 3, 8, 8)
    explanation = Explainer(model).explain(x)
    torch.testing.assert_close(explanation.logits, model(x))


def test_output_relevance_is_the_logit_of_the_explained_class():
    model = tiny_cnn(bias=True)
    x = torch.rand(2, 3, 8, 8)
    explanation = Explainer(model).explain(x, target=[2, 0])
    top = explanation.relevances["6.2"]
    assert top[0].tolist()[:2] == [0.0, 0.0] and top[0, 2] == model(x)[0, 2]
    assert top[1, 0] == model(x)[1, 0] and top[1, 1:].abs().sum() == 0


def test_a_batch_gives_the_same_as_each_image_alone():
    model = tiny_cnn(bias=True)
    x = torch.rand(3, 3, 8, 8)
    batch = Explainer(model).explain(x).relevances["input"]
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], Explainer(model).explain(x[i:i + 1]).relevances["input"])


def test_channel_conditioned_propagation_equals_dense_masking():
    model = tiny_cnn(bias=True)
    explainer = Explainer(model, "paper")
    explanation = explainer.explain(torch.rand(2, 3, 8, 8))
    start = explanation.relevances["3"][1:2].expand(5, -1, -1, -1)
    channels = torch.tensor([4, 1, 3, 0, 2])
    mask = torch.zeros(5, 5, 1, 1)
    mask[torch.arange(5), channels] = 1
    dense = explanation.propagate(start, "3", image=1, masks={"3": mask})
    sparse = explanation.propagate(start, "3", image=1, channels={"3": channels})
    torch.testing.assert_close(dense, sparse)
    torch.testing.assert_close(dense.sum(0), explanation.relevances["input"][1], rtol=1e-4, atol=1e-6)


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.GroupNorm(2, 4)), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ModelError, match=r"unsupported operation '1\.0' \(module GroupNorm in module '1'\)"):
        Explainer(model)


def test_unsupported_model_class_is_named():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ModelError, match="unsupported model Net"):
        Explainer(Net())


def test_class_index_out_of_range():
    with pytest.raises(TargetError, match="class index 3 out of range"):
        Explainer(tiny_cnn(True)).explain(torch.rand(1, 3, 8, 8), target=3)


def test_batch_norm_is_folded_into_the_conv():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.rand(2, 3, 8, 8)
    explanation = Explainer(model).explain(x)
    torch.testing.assert_close(explanation.logits, model(x))
    assert explanation.names == ["0", "2", "3", "4"] and model[0].bias is not None


def test_rule_overrides_by_name():
    model = tiny_cnn(bias=True)
    composite = zero_everywhere(model)
    composite.overrides = {"3": Gamma(1.0), "1": Pass()}
    rules = Explainer(model, composite).rules
    assert rules["3"] == Gamma(1.0) and rules["0"] == Zero() and isinstance(rules["2"], WinnerTakesAll)
    composite.overrides = {"nope": Gamma()}
    with pytest.raises(ModelError, match="unknown layer"):
        Explainer(model, composite)
