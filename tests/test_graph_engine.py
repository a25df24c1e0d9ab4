"""The graph engine's algebra on tiny hand-made networks: residual additions, concatenations, gates,
grouped convolutions, eval semantics, functional operations and clear errors for what LRP cannot pass."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_widgets.engine import Epsilon, Explainer, Zero
from lrp_widgets.engine.deconv import deconvolve
from lrp_widgets.engine.composites import Composite
from lrp_widgets.engine.models import LoadedModel
from lrp_widgets.engine.operations import Add, Cat
from lrp_widgets.engine.rules import Norm, Split
from lrp_widgets.errors import ModelError, TargetError


def zero_composite(**overrides) -> Composite:
    """LRP-0 on every Conv2d/Linear layer, the given rules by step name."""
    return Composite("zero", lambda convs, linears: {n: Zero() for n in convs + linears}, overrides=overrides)


def frozen(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):  # a slightly positive mean keeps the ReLUs alive
            with torch.no_grad():
                module.weight.normal_(0.1, 0.5)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1)
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval().requires_grad_(False)


def assert_conserved(value, total, name):
    torch.testing.assert_close(value, total, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


# --- networks ------------------------------------------------------------------------------------------


class Block(nn.Module):
    """conv → relu → conv, plus the identity (or a 1×1 ``downsample``), → relu."""

    def __init__(self, channels: int, out: int | None = None, bias: bool = False, stride: int = 1):
        super().__init__()
        out = out or channels
        self.conv1 = nn.Conv2d(channels, out, 3, stride, 1, bias=bias)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=bias)
        self.downsample = nn.Conv2d(channels, out, 1, stride, bias=bias) if out != channels or stride != 1 else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.relu(self.conv1(x))) + identity)


class Residual(nn.Module):
    """conv → relu → block (conv → relu → conv, + identity) → relu → flatten → linear."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.relu = nn.ReLU()
        self.block = Block(4, bias=bias)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 3, bias=bias)

    def forward(self, x):
        return self.fc(self.flatten(self.block(self.relu(self.conv(x)))))


class Concat(nn.Module):
    """conv → relu → [conv (2 channels), conv (3 channels)] → cat → relu → flatten → linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.left = nn.Conv2d(4, 2, 3, padding=1, bias=False)
        self.right = nn.Conv2d(4, 3, 1, bias=False)
        self.fc = nn.Linear(5 * 4 * 4, 3, bias=False)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.relu(torch.cat([self.left(x), self.right(x)], 1))
        return self.fc(torch.flatten(x, 1))


class Excitation(nn.Module):
    """conv → relu → x · sigmoid(fc(pool(x))) → flatten → linear (squeeze-and-excitation)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Linear(4, 4)
        self.fc = nn.Linear(4 * 4 * 4, 3, bias=False)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = x * torch.sigmoid(self.squeeze(self.pool(x).flatten(1)))[..., None, None]
        return self.fc(x.flatten(1))


X = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1


# --- 1. conservation ------------------------------------------------------------------------------------


def test_residual_network_names_its_steps_by_module_path():
    explainer = Explainer(frozen(Residual()), zero_composite())
    assert explainer.network.names == ["conv", "relu", "block.conv1", "block.relu", "block.conv2", "block.add",
                                       "block.relu@1", "flatten", "fc"]
    assert explainer.network.by_name["block.add"].inputs == ("block.conv2", "relu")
    assert explainer.network.blocks["block"] == "block.relu@1"


def test_conservation_through_a_residual_block():
    model = frozen(Residual())
    explanation = Explainer(model, zero_composite(**{"block.add": Norm(stabilizer=0)})).explain(X)
    total = explanation.output_relevance
    sums = explanation.relevance_sums()
    # every step all relevance passes through holds all of it
    for name in ("input", "conv", "relu", "block.add", "block.relu@1", "flatten", "fc"):
        assert_conserved(sums[name], total, name)
    # the branch keeps its share from the addition down to the block's input, where the skip's share joins it
    branch = sums["block.conv2"]
    for name in ("block.relu", "block.conv1"):
        assert_conserved(sums[name], branch, name)
    a = explanation.activations
    skip = (a["relu"] / (a["block.conv2"] + a["relu"]).where(a["block.relu@1"] > 0, torch.inf)
            * explanation.relevances["block.add"])
    assert_conserved(branch + skip.flatten(1).sum(1), total, "branch + skip")
    assert (branch.abs() > 1e-3 * total.abs()).all() and (skip.flatten(1).sum(1).abs() > 1e-3 * total.abs()).all()


def test_conservation_through_a_concatenation():
    model = frozen(Concat())
    explanation = Explainer(model, zero_composite()).explain(X)
    total = explanation.output_relevance
    sums = explanation.relevance_sums()
    assert explanation.network.by_name["cat"].inputs == ("left", "right")
    for name in ("input", "conv", "relu", "cat", "relu@1", "flatten", "fc"):
        assert_conserved(sums[name], total, name)
    assert_conserved(sums["left"] + sums["right"], total, "left + right")
    torch.testing.assert_close(explanation.relevances["cat"], torch.cat(
        [explanation.relevances["left"], explanation.relevances["right"]], 1))


def test_conservation_through_a_gate_whose_branch_gets_nothing():
    model = frozen(Excitation())
    explainer = Explainer(model, zero_composite())  # the gate's sigmoid raises nothing
    explanation = explainer.explain(X)
    total = explanation.output_relevance
    sums = explanation.relevance_sums()
    assert explainer.network.by_name["mul"].inputs == ("relu", "getitem")
    for name in ("input", "conv", "relu", "mul", "flatten@1", "fc"):
        assert_conserved(sums[name], total, name)
    # the signal gets all of the gate's relevance, the gate's branch none
    torch.testing.assert_close(explanation.relevances["relu"], explanation.relevances["mul"], rtol=0, atol=0)
    for name in ("pool", "flatten", "squeeze", "sigmoid", "getitem"):
        assert name in explainer.network.by_name
        relevance = explanation.relevances.get(name)
        assert relevance is None or not relevance.any(), name
    relevance = explanation.relevances["mul"]
    assert not explanation.propagate(relevance[:1], "mul", stop="squeeze").any()


# --- 2. the residual split by hand ----------------------------------------------------------------------


def test_residual_split_by_hand():
    left, right = torch.tensor([[3.0, -3e-6]]), torch.tensor([[1.0, 1e-6]])
    relevance = torch.tensor([[8.0, 6.0]])
    out = left + right  # (4, -2e-6)
    exact = Norm(stabilizer=0.0).bind(Add(), (left, right), out)(relevance)
    # R_i = x_i / Σx · R: 3/4·8 = 6 and 1/4·8 = 2; -3e-6/-2e-6·6 = 9 and 1e-6/-2e-6·6 = -3
    torch.testing.assert_close(exact[0], torch.tensor([[6.0, 9.0]]))
    torch.testing.assert_close(exact[1], torch.tensor([[2.0, -3.0]]))
    # default ε = 1e-6 with the sign of Σx: 4 → 4.000001 (nearly nothing); -2e-6 → -3e-6 (a third absorbed)
    stabilised = Norm().bind(Add(), (left, right), out)(relevance)
    torch.testing.assert_close(stabilised[0], torch.tensor([[3 / 4.000001 * 8, 6.0]]))
    torch.testing.assert_close(stabilised[1], torch.tensor([[1 / 4.000001 * 8, -2.0]]))


def test_residual_split_by_hand_in_a_network():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = TwoPaths().requires_grad_(False)
    model.a.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 3e-6]]))
    model.b.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 1e-6]]))
    x = torch.tensor([[1.0, 1.0]])  # a(x) = (3, 3e-6), b(x) = (1, 1e-6); logits (4, 4e-6)
    explanation = Explainer(model, zero_composite()).explain(x, target=0)
    assert explanation.network.names == ["a", "b", "add"]
    torch.testing.assert_close(explanation.relevances["a"], torch.tensor([[3 / 4.000001 * 4, 0.0]]))
    torch.testing.assert_close(explanation.relevances["b"], torch.tensor([[1 / 4.000001 * 4, 0.0]]))
    # tiny summands: Σx = 4e-6 is stabilised to 5e-6, so a fifth of the relevance is absorbed
    small = Explainer(model, zero_composite()).explain(x, target=1)
    torch.testing.assert_close(small.relevances["a"], torch.tensor([[0.0, 3 / 5 * 4e-6]]), rtol=1e-5, atol=0)
    torch.testing.assert_close(small.relevances["b"], torch.tensor([[0.0, 1 / 5 * 4e-6]]), rtol=1e-5, atol=0)
    torch.testing.assert_close(small.relevances["input"], torch.tensor([[0.0, 4 / 5 * 4e-6]]), rtol=1e-5, atol=0)
    exact = Explainer(model, zero_composite(add=Norm(stabilizer=0))).explain(x, target=1)
    torch.testing.assert_close(exact.relevances["a"], torch.tensor([[0.0, 3e-6]]), rtol=1e-5, atol=0)
    torch.testing.assert_close(exact.relevances["b"], torch.tensor([[0.0, 1e-6]]), rtol=1e-5, atol=0)


# --- 3. concatenation by hand ---------------------------------------------------------------------------


def test_concatenation_by_hand():
    a, b = torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2)
    relevance = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 2, 2)
    left, right = Split().bind(Cat(1), (a, b), torch.cat([a, b], 1))(relevance)
    assert left.tolist() == relevance[:, :2].tolist() and right.tolist() == relevance[:, 2:].tolist()

    class Joined(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 1, bias=False)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1)

    model = Joined().requires_grad_(False)
    model.a.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    model.b.weight.copy_(torch.tensor([[1.0, 3.0]]))
    x = torch.tensor([[1.0, 1.0]])  # logits (1, 2, 4)
    explainer = Explainer(model, zero_composite())
    third = explainer.explain(x, target=2)
    assert third.relevances["a"].tolist() == [[0.0, 0.0]] and third.relevances["b"].tolist() == [[4.0]]
    assert third.relevances["input"].tolist() == [[1.0, 3.0]]
    second = explainer.explain(x, target=1)
    assert second.relevances["a"].tolist() == [[0.0, 2.0]] and second.relevances["b"].tolist() == [[0.0]]


# --- 4. grouped and depthwise convolutions: channel restriction ----------------------------------------


@pytest.mark.parametrize("out, groups, stride", [(4, 4, 1), (8, 4, 1), (6, 2, 1), (4, 4, 2)],
                         ids=["depthwise", "depthwise-x2", "groups-2", "depthwise-stride-2"])
@pytest.mark.parametrize("composite", ["paper", "epsilon"])
def test_channel_restriction_on_a_grouped_conv_equals_dense_masking(out, groups, stride, composite):
    model = frozen(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(4, out, 3, stride, padding=1, groups=groups), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(out * 16 // stride**2, 3)))
    explanation = Explainer(model, composite).explain(X)
    channels = torch.arange(out)
    start = explanation.relevances["2"][1:2].expand(out, -1, -1, -1)
    mask = torch.zeros(out, out, 1, 1)
    mask[channels, channels] = 1
    for stop in ("input", "1"):
        sparse = explanation.propagate(start, "2", stop=stop, image=1, channels={"2": channels})
        dense = explanation.propagate(start, "2", stop=stop, image=1, masks={"2": mask})
        whole = explanation.propagate(start, "2", stop=stop, image=1)
        torch.testing.assert_close(sparse, dense)
        for row in range(out):
            assert not torch.allclose(sparse[row], whole[row], rtol=1e-3, atol=1e-6), (stop, row)
        torch.testing.assert_close(sparse.sum(0), whole[0], rtol=1e-4, atol=1e-6)
    # one channel of a depthwise conv reads one input channel only
    if groups == 4:
        one = explanation.propagate(start, "2", stop="1", image=1, channels={"2": channels})
        per_input = one.flatten(2).abs().sum(2) > 0
        assert (per_input.sum(1) <= 1).all() and per_input[channels, channels // (out // 4)].any()


# --- 5. eval semantics ----------------------------------------------------------------------------------


class Trained(nn.Module):
    """Conv + batch norm (folded), concatenation, batch norm after it (unfolded), Dropout modules and
    functional dropout: all of which differ in train mode."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2))
        self.b = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(5 * 16, 3)

    def forward(self, x):
        x = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        x = self.drop(x.flatten(1))
        return self.fc(F.dropout(x, 0.3, self.training))


def training_flags(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def test_a_model_left_in_train_mode_is_explained_in_eval_semantics():
    model = frozen(Trained())
    reference = copy.deepcopy(model).eval()
    model.train()
    model.a.eval()  # mixed modes are kept as they are
    flags = training_flags(model)
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    explainer = Explainer(model, "epsilon")
    assert training_flags(model) == flags
    assert not any(isinstance(step.module, nn.BatchNorm2d) for step in explainer.network.steps
                   if step.name.startswith("a."))  # a's batch norm is folded, the one after the cat is not
    assert isinstance(explainer.network.by_name["bn"].module, nn.BatchNorm2d)
    first, second = explainer.explain(X), explainer.explain(X)
    assert training_flags(model) == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, statistics[key]), key  # no running statistics updated
    expected = Explainer(reference, "epsilon").explain(X)
    torch.testing.assert_close(first.logits, reference(X))
    for name, relevance in expected.relevances.items():
        torch.testing.assert_close(first.relevances[name], relevance, msg=name)
        torch.testing.assert_close(second.relevances[name], relevance, msg=name)
    assert model.training and not model.a.training and model.bn.training and model.drop.training
    model.eval()
    assert torch.equal(model(X), reference(X))


# --- 6. LoadedModel and LRP-0 ---------------------------------------------------------------------------


def test_explainer_accepts_a_loaded_model():
    model = frozen(Residual(bias=True))
    loaded = LoadedModel(model, "residual", "random", False, ["a", "b", "c"])
    via_loaded = Explainer(loaded, "paper").explain(X)
    via_module = Explainer(model, "paper").explain(X)
    torch.testing.assert_close(via_loaded.logits, model(X))
    for name, relevance in via_module.relevances.items():
        torch.testing.assert_close(via_loaded.relevances[name], relevance, rtol=0, atol=0)


def test_zero_is_epsilon_zero():
    assert isinstance(Zero(), Epsilon) and Zero().epsilon == 0 and Zero().stabilizer == 0
    assert Zero() == Zero()


# --- 7. clear errors ------------------------------------------------------------------------------------


class Stem(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class Shifted(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block(3)
        self.fc = nn.Linear(3 * 16, 3)

    def forward(self, x):
        return self.fc(self.block(x).flatten(1) + 1)


def functional(act):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 16, 3)

        def forward(self, x):
            return self.fc(act(self.conv(x)).flatten(1))
    return Net()


@pytest.mark.parametrize("model, step, operation", [
    (Stem(nn.GroupNorm(2, 4)), "act", "module GroupNorm"),
    (Stem(nn.Softplus()), "act", "module Softplus"),
    (functional(torch.exp), "exp", "function torch.exp"),
    (functional(lambda x: x.sort(1)[0]), "sort", "method Tensor.sort"),
    (functional(lambda x: x + 1), "add", "function operator.add"),
    (functional(lambda x: x * x), "mul", "function operator.mul"),
    (Shifted(), "add", "function operator.add"),
], ids=["GroupNorm", "Softplus", "torch.exp", "sort", "x + 1", "x * x", "x + 1 after a block"])
def test_an_unsupported_operation_on_the_relevance_path_is_named(model, step, operation):
    with pytest.raises(ModelError, match=rf"unsupported operation '{step}' \({operation}\)") as error:
        Explainer(model)
    assert "\n" not in str(error.value)


def test_an_unsupported_operation_in_a_block_names_step_and_block():
    class InBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.exp(self.conv(x))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = InBlock()
            self.fc = nn.Linear(4 * 16, 3)

        def forward(self, x):
            return self.fc(self.block(x).flatten(1))

    with pytest.raises(ModelError, match=r"'block\.exp' \(function torch\.exp in module 'block'\)"):
        Explainer(Outer())


def test_an_untraceable_model_is_one_line():
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 16, 3)

        def forward(self, x):
            if x.sum() > 0:
                x = x * 2
            return self.fc(self.conv(x).flatten(1))

    with pytest.raises(ModelError, match="cannot follow the forward pass of Branching") as error:
        Explainer(Branching())
    assert "\n" not in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_model_returning_a_tuple_is_refused():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x.flatten(1))
            return y, y

    with pytest.raises(ModelError, match="returns tuple"):
        Explainer(Pair())


def test_a_sigmoid_gate_of_the_same_shape_gives_the_signal_all_as_silu_does():
    """x · sigmoid(x): both factors have the signal's shape; the sigmoid's is the gate, so it is explained as
    the SiLU it is (the identity rule)."""
    Explainer(frozen(Excitation())).explain(X)

    class Swish(nn.Module):
        def __init__(self, written_out: bool):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 16, 3)
            self.written_out = written_out

        def forward(self, x):
            x = self.conv(x)
            x = x * torch.sigmoid(x) if self.written_out else F.silu(x)
            return self.fc(x.flatten(1))

    written, silu = frozen(Swish(True)), Swish(False)
    silu.load_state_dict(written.state_dict())
    ours, reference = (Explainer(m, zero_composite()).explain(X, 0) for m in (written, frozen(silu)))
    torch.testing.assert_close(ours.relevances["input"], reference.relevances["input"])
    torch.testing.assert_close(ours.relevances["conv"], ours.relevances["mul"])  # the signal takes it all


class KeywordCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.right = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 16, 3, bias=False)
        self.keyword = True

    def forward(self, x):
        parts = [self.left(x), self.right(x)]
        x = torch.cat(tensors=parts, dim=1) if self.keyword else torch.cat(parts, 1)
        return self.fc(F.relu(x).flatten(1))


def test_a_keyword_concatenation_is_explained_like_a_positional_one():
    model = frozen(KeywordCat())
    positional = copy.deepcopy(model)
    positional.keyword = False
    expected = Explainer(positional, zero_composite()).explain(X)
    explanation = Explainer(model, zero_composite()).explain(X)
    torch.testing.assert_close(explanation.logits, model(X))
    torch.testing.assert_close(explanation.relevances["input"], expected.relevances["input"])


# --- 8. shapes: functional operations and views ---------------------------------------------------------


class Modules(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(5 * 2 * 2, 3))


def flattening(how):
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
            self.fc = nn.Linear(5 * 2 * 2, 3)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), kernel_size=2)
            x = F.adaptive_avg_pool2d(torch.relu(self.conv2(x)), (2, 2))
            return self.fc(how(x))
    return Functional()


@pytest.mark.parametrize("how", [lambda x: x.view(x.size(0), -1), lambda x: torch.flatten(x, 1),
                                 lambda x: x.reshape(x.shape[0], -1), lambda x: x.flatten(1)],
                         ids=["view", "torch.flatten", "reshape", "Tensor.flatten"])
def test_functional_operations_explain_as_their_modules(how):
    modules = frozen(Modules())
    model = flattening(how).requires_grad_(False)
    for name, index in (("conv1", 0), ("conv2", 3), ("fc", 7)):
        getattr(model, name).load_state_dict(modules[index].state_dict())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours, theirs = Explainer(model, "paper").explain(x), Explainer(modules, "paper").explain(x)
    torch.testing.assert_close(ours.logits, model(x))
    torch.testing.assert_close(ours.logits, theirs.logits)
    for name, index in (("conv1", "0"), ("conv2", "3"), ("fc", "7"), ("input", "input")):
        torch.testing.assert_close(ours.relevances[name], theirs.relevances[index], msg=name)
    assert ours.relevances["input"].abs().sum() > 0


# --- 9. channel-sparse propagation through residual blocks ----------------------------------------------


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.block1 = Block(4, bias=True)
        self.block2 = Block(4, 6, bias=True, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.block2(self.block1(self.relu(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.mark.parametrize("start, stop", [
    ("block1.relu@1", "input"), ("block1.relu@1", "relu"),
    ("block2.relu@1", "relu"), ("block2.add", "block1.relu@1"),
    ("block2.conv2", "relu"), ("block2.conv1", "relu"), ("block2.downsample", "block1.relu@1"),
    ("block1.conv2", "input"),
])
def test_channel_restriction_in_residual_blocks_equals_dense_masking(start, stop):
    model = frozen(TwoBlocks())
    explanation = Explainer(model, "paper").explain(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)))
    channels = explanation.relevances[start].shape[1]
    rows = torch.arange(channels)
    relevance = explanation.relevances[start][1:2].expand(channels, -1, -1, -1)
    mask = torch.zeros(channels, channels, 1, 1)
    mask[rows, rows] = 1
    sparse = explanation.propagate(relevance, start, stop, image=1, channels={start: rows})
    dense = explanation.propagate(relevance, start, stop, image=1, masks={start: mask})
    whole = explanation.propagate(relevance[:1], start, stop, image=1)
    torch.testing.assert_close(sparse, dense)
    torch.testing.assert_close(sparse.sum(0, keepdim=True), whole, rtol=1e-4, atol=1e-6)
    assert all(not torch.allclose(sparse[row], whole[0], rtol=1e-3, atol=1e-6) for row in rows)


def test_relevance_reaches_a_stop_through_both_branches():
    model = frozen(TwoBlocks())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    explanation = Explainer(model, "paper").explain(x)
    for block, stop in (("block1.relu@1", "relu"), ("block2.relu@1", "block1.relu@1")):
        for image in range(2):
            got = explanation.propagate(explanation.relevances[block][image:image + 1], block, stop, image=image)
            torch.testing.assert_close(got, explanation.relevances[stop][image:image + 1], msg=f"{block} → {stop}")
    # a condition on the branch's conv keeps only the relevance through it (crp's exclude_parallel): the
    # shortcut's share is what the whole block passes minus that
    start = explanation.relevances["block1.add"][:1]
    through = explanation.propagate(start, "block1.add", "relu", masks={"block1.conv2": torch.ones(1)})
    whole = explanation.propagate(start, "block1.add", "relu")
    a = explanation.activations
    add = a["block1.conv2"][:1] + a["relu"][:1]
    skip = a["relu"][:1] * start / (add + torch.where(add >= 0, 1e-6, -1e-6))
    torch.testing.assert_close(whole - through, skip)
    assert through.abs().max() > 0.01 * skip.abs().max()
    zero = explanation.propagate(start, "block1.add", "relu", masks={"block1.conv2": torch.zeros(1)})
    assert not zero.any()


class SelfNormalising(nn.Module):
    """A network that normalises its own input with buffers: ``(x − mean) / std``, then conv → relu → linear."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.fc(F.relu(self.conv(x)).flatten(1))


def test_a_network_normalising_its_own_input_is_explained_and_deconvolved():
    """The subtraction is a sum with −mean (the constant absorbs its share, as a bias does); the division by a
    buffer passes all relevance to the signal; the deconvnet divides by std (the gradient)."""
    model = frozen(SelfNormalising())
    explanation = Explainer(model, "zero").explain(X)  # stabiliser 0 on the subtraction too
    torch.testing.assert_close(explanation.logits, model(X))
    relevance = explanation.relevances
    torch.testing.assert_close(relevance["sub"], relevance["truediv"])
    torch.testing.assert_close(relevance["input"], X * relevance["sub"] / (X - model.mean))
    reconstruction = deconvolve(explanation, "conv", [1])
    signal = torch.zeros_like(explanation.activations["conv"][:1])
    signal[0, 1] = explanation.activations["conv"][0, 1].clamp(min=0)
    expected = F.conv_transpose2d(signal, model.conv.weight, None, 1, 1) / model.std
    torch.testing.assert_close(reconstruction, expected)


def test_a_division_by_a_value_computed_from_the_input_is_refused():
    class Normalised(SelfNormalising):
        def forward(self, x):
            x = self.conv(x)
            return self.fc((x / x.norm()).flatten(1))

    with pytest.raises(ModelError, match=r"'truediv' \(function operator.truediv\): only a division by a parameter"):
        Explainer(Normalised())


def test_a_difference_of_two_branches_gives_the_subtrahend_its_negated_share():
    class Difference(nn.Module):
        def __init__(self):
            super().__init__()
            self.left, self.right = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 16, 3)

        def forward(self, x):
            return self.fc((self.left(x) - self.right(x)).flatten(1))

    model = frozen(Difference())
    explanation = Explainer(model, "zero").explain(X)
    relevance, activation = explanation.relevances, explanation.activations
    share = relevance["sub"] / (activation["left"] - activation["right"])
    torch.testing.assert_close(relevance["left"], activation["left"] * share)
    torch.testing.assert_close(relevance["right"], -activation["right"] * share)
    assert_conserved(relevance["left"].sum() + relevance["right"].sum(), relevance["sub"].sum(), "a − b")


def test_a_backward_pass_stopped_at_a_cut_equals_the_full_one_above_it():
    """ResNet-18 (random biases): stopped at layer3's output, every relevance above equals the full pass's and
    nothing below is computed; a step inside a block (not passed by all relevance) is refused."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    explainer = Explainer(model)
    x = torch.randn(2, 3, 64, 64)
    full = explainer.explain(x, [1, 7])
    stop = explainer.network.resolve("layer3")
    stopped = explainer.explain(x, [1, 7], stop=stop)
    assert set(stopped.relevances) == set(explainer.network.region(explainer.network.output, stop)) | {stop}
    for name, relevance in stopped.relevances.items():
        assert torch.equal(relevance, full.relevances[name]), name
    assert "layer1.0.conv1" not in stopped.propagators and "layer4.0.conv1" in stopped.propagators
    with pytest.raises(TargetError, match="only stop at a step all relevance passes"):
        explainer.explain(x, stop="layer3.0.conv1")
