"""Bad or tricky networks and inputs a user brings (issue 17). Each one is either explained exactly — equal
to zennit with its own composites (≤ 1e-4 × max |R|), or to LRP-0 as a modified gradient
(tests/reference.py), with logits equal to ``model(x)`` — or refused with one line, an ``LRPWidgetsError``;
no other exception type may escape (``pytest.raises(LRPWidgetsError)`` lets any other fail the test)."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.shufflenetv2 import channel_shuffle
from torchvision.ops import SqueezeExcitation
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

from lrp_widgets.engine import Explainer
from lrp_widgets.engine.images import IMAGENET_MEAN, IMAGENET_STD
from lrp_widgets.engine.models import LoadedModel
from lrp_widgets.errors import LRPWidgetsError, ModelError, TargetError

from .reference import (modified_gradient_lrp0, relative_error, seeded, zennit_input_relevance, zero_biases,
                        zero_layer_map)

TOLERANCE = 1e-4  # × max |R|
GENERATOR = torch.Generator().manual_seed(0)
#: an ImageNet-normalised image batch (inside z^B's ImageNet box)
X = ((torch.rand(1, 3, 16, 16, generator=GENERATOR) - torch.tensor(IMAGENET_MEAN)[:, None, None])
     / torch.tensor(IMAGENET_STD)[:, None, None])


def one_line(error: BaseException) -> None:
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert "Traceback" not in message


def assert_logits(explanation, model: nn.Module, x: torch.Tensor) -> None:
    expected = model(x)
    error = float((explanation.logits - expected).abs().max() / expected.abs().max())
    assert error <= 1e-4, f"logits differ from model(x) by {error:.2e} × max |logit|"


def assert_equal(ours: torch.Tensor, theirs: torch.Tensor, what: str = "input relevance") -> None:
    error = relative_error(ours, theirs)
    assert error <= TOLERANCE, f"{what}: max |difference| = {error:.2e} × max |R|"


def imagenet_box(shape) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (-mean / std).expand(shape[1:])[None].clone(), ((1 - mean) / std).expand(shape[1:])[None].clone()


def zennit_composite(preset: str, shape=X.shape):
    if preset == "zero":
        return zero_layer_map()
    if preset == "epsilon-gamma-box":
        return EpsilonGammaBox(*imagenet_box(shape))
    return EpsilonPlusFlat()


# --- 1-4: convolutions with their own padding, dilation and groups: equal to zennit ------------------------------


class Convs(nn.Module):
    """conv1 → ReLU → conv2 → ReLU → (max-pool) → adaptive average pool → flatten → fc."""

    def __init__(self, first: dict, second: dict, maxpool: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, **first)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 9, **second)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if maxpool else nn.Identity()
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(9 * 4, 5)

    def forward(self, x):
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avg(x), 1))


CONVS = {
    "reflect": (dict(kernel_size=3, padding=1, padding_mode="reflect"),
                dict(kernel_size=3, padding=1, padding_mode="reflect")),
    "circular": (dict(kernel_size=3, padding=1, padding_mode="circular"),
                 dict(kernel_size=5, stride=2, padding=2, padding_mode="circular")),
    "replicate+maxpool": (dict(kernel_size=3, padding=2, padding_mode="replicate"),
                          dict(kernel_size=3, padding=1, padding_mode="replicate")),
    "same": (dict(kernel_size=3, padding="same"), dict(kernel_size=5, padding="same")),
    "pointwise-strided": (dict(kernel_size=3, padding=1), dict(kernel_size=1, stride=2)),
    "same-even": (dict(kernel_size=4, padding="same"), dict(kernel_size=2, padding="same", dilation=3)),
    "dilated-grouped": (dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=2, dilation=2, groups=3)),
    "same-reflect-grouped": (dict(kernel_size=3, padding="same", padding_mode="reflect"),
                             dict(kernel_size=4, padding="same", padding_mode="reflect", groups=3)),
}


@pytest.mark.parametrize("preset", ["zero", "epsilon-gamma-box", "epsilon-plus-flat"])
@pytest.mark.parametrize("name", CONVS)
def test_padded_dilated_grouped_convolutions_equal_zennit(name, preset):
    first, second = CONVS[name]
    model = seeded(Convs(first, second, maxpool=name.endswith("maxpool")), seed=1)
    explanation = Explainer(model, preset).explain(X)
    assert_logits(explanation, model, X)
    logits, theirs = zennit_input_relevance(model, X, zennit_composite(preset))
    assert int(explanation.targets[0]) == int(logits.argmax())
    assert_equal(explanation.relevances["input"], theirs)


# --- 5. BatchNorm2d(affine=False) after a conv: folded, as zennit's merge on a hand-folded copy ------------------


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing bn(conv(x)) in eval mode (by hand, for the affine=False norm zennit cannot merge)."""
    fused = copy.deepcopy(conv)
    scale = torch.rsqrt(bn.running_var + bn.eps) * (bn.weight if bn.weight is not None else 1.0)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    shift = bn.bias if bn.bias is not None else 0.0
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight * scale[:, None, None, None], requires_grad=False)
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
    return fused


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6, affine=False)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, padding_mode="reflect")
        self.bn2 = nn.BatchNorm2d(8, affine=False)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("preset", ["zero", "epsilon-gamma-box"])
def test_batch_norm_without_affine_after_a_conv_is_folded(preset):
    model = seeded(Normed(), seed=2)
    plain = nn.Sequential(folded(model.conv1, model.bn1), nn.ReLU(), folded(model.conv2, model.bn2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    plain[-1].load_state_dict(model.fc.state_dict())
    torch.testing.assert_close(plain(X), model(X), rtol=1e-5, atol=1e-5)
    explanation = Explainer(model, preset).explain(X)
    assert_logits(explanation, model, X)
    _, theirs = zennit_input_relevance(plain, X, zennit_composite(preset))
    assert_equal(explanation.relevances["input"], theirs)


# --- 6. a batch norm after a concatenation and at the input: unfolded, σ frozen ----------------------------------


class Unfolded(nn.Module):
    """BN on the input, two convs concatenated, BN after the concatenation (DenseNet's pre-activation)."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.left = nn.Conv2d(3, 3, 3, padding=1)
        self.right = nn.Conv2d(3, 2, 1)
        self.bn = nn.BatchNorm2d(5)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(5, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x):
        x = self.bn0(x)
        x = self.relu(self.bn(torch.cat([self.left(x), self.right(x)], 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2), 1))


def test_batch_norms_not_after_a_conv_equal_the_modified_gradient():
    """With biases and running means non-zero the rule ``x ⊙ (w/σ) ⊙ R / y`` absorbs the shifts; the
    modified-gradient reference has them too. With them zero, the input relevance sums to the logit."""
    model = seeded(Unfolded(), seed=3)
    explanation = Explainer(model, "zero").explain(X)
    assert_logits(explanation, model, X)
    assert {"bn0", "bn"} <= set(explanation.network.by_name)  # not folded: no conv before them
    _, reference = modified_gradient_lrp0(model, X)
    assert_equal(explanation.relevances["input"], reference)
    zero = Explainer(zero_biases(model), "zero").explain(X)
    assert abs(float(zero.relevances["input"].sum() / zero.logits.max()) - 1) <= 1e-5
    paper = Explainer(model).explain(X)  # the default preset explains it too
    assert torch.isfinite(paper.relevances["input"]).all() and paper.relevances["input"].abs().sum() > 0


# --- 7. a batch norm without running statistics: refused --------------------------------------------------------


def test_batch_norm_without_running_statistics_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.Flatten(), nn.Linear(4 * 256, 5)).eval()
    with pytest.raises(ModelError) as error:
        Explainer(model).explain(X)
    one_line(error.value)
    assert "'2'" in str(error.value) or "track_running_stats" in str(error.value)


# --- 8. in-place updates -----------------------------------------------------------------------------------------


class InPlaceResidual(nn.Module):
    """``h += f(h)`` (ResNet's ``out += identity``)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 256, 5)

    def forward(self, x):
        h = self.conv1(x)
        h += self.conv2(F.relu(h))
        return self.fc(F.relu(h).flatten(1))


class InPlaceAliased(InPlaceResidual):
    """``h += f(h)`` where the old ``h`` is read again later: in eager mode ``skip`` sees the sum too."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8 * 256, 5)

    def forward(self, x):
        h = self.conv1(x)
        skip = h
        h += self.conv2(F.relu(h))
        return self.fc(torch.cat([skip, h], 1).flatten(1))


class InPlaceReLURead(InPlaceAliased):
    """An in-place ReLU whose input is read again later (both read the rectified values in eager mode)."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.conv1(x)
        a = self.relu(h)
        return self.fc(torch.cat([h, self.conv2(a)], 1).flatten(1))


def explained_or_refused(model: nn.Module, x: torch.Tensor, preset: str = "zero"):
    """The explanation (its logits those of ``model(x)``), or ``None`` where the engine refused in one line."""
    try:
        explanation = Explainer(model, preset).explain(x)
    except LRPWidgetsError as error:
        one_line(error)
        return None
    assert_logits(explanation, model, x)
    return explanation


def test_in_place_residual_is_explained():
    model = zero_biases(seeded(InPlaceResidual(), seed=4))
    explanation = Explainer(model, "zero").explain(X)
    assert_logits(explanation, model, X)
    _, reference = modified_gradient_lrp0(model, X)
    assert_equal(explanation.relevances["input"], reference)
    assert abs(float(explanation.relevances["input"].sum() / explanation.logits.max()) - 1) <= 1e-5


@pytest.mark.parametrize("network", [InPlaceAliased, InPlaceReLURead])
def test_in_place_update_read_later_keeps_eager_semantics_or_is_refused(network):
    model = zero_biases(seeded(network(), seed=4))
    x = X.clone()
    explanation = explained_or_refused(model, x)
    assert torch.equal(x, X), "the input was changed in place"
    if explanation is not None:
        assert abs(float(explanation.relevances["input"].sum() / explanation.logits.max()) - 1) <= 1e-5
        assert torch.equal(model(X), model(X))  # the model's own forward still runs (nothing left in place)


# --- 9. a grayscale network under the default preset ---------------------------------------------------------------


class Gray(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


GRAY = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(6)) - 0.5) / 0.5  # MNIST-like, in [-1, 1]


def test_grayscale_network_under_the_default_preset():
    """ImageNet's 3-channel z^B bounds do not fit one channel: the engine takes other bounds (the data's range,
    with a warning, or the model's), and z^B conserves what reaches the first conv."""
    model = seeded(Gray(), seed=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = Explainer(model).explain(GRAY)
    for warning in caught:
        assert "\n" not in str(warning.message)
    assert_logits(explanation, model, GRAY)
    relevance = explanation.relevances["input"]
    assert relevance.shape == GRAY.shape and torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    first = float(explanation.relevances["features.0"].sum())
    assert abs(float(relevance.sum()) / first - 1) <= 1e-3, "z^B did not conserve: its bounds do not hold the input"


def test_grayscale_loaded_model_takes_its_bounds_from_its_mean_and_std():
    model = seeded(Gray(), seed=6)
    loaded = LoadedModel.of(model, categories=[str(i) for i in range(10)], mean=(0.5,), std=(0.5,))
    explanation = Explainer(loaded, "epsilon-gamma-box").explain(GRAY)
    assert_logits(explanation, model, GRAY)
    low, high = torch.full_like(GRAY, -1.0), torch.full_like(GRAY, 1.0)  # (0 − 0.5)/0.5 and (1 − 0.5)/0.5
    _, theirs = zennit_input_relevance(model, GRAY, EpsilonGammaBox(low, high))
    assert_equal(explanation.relevances["input"], theirs)


# --- 10-12. interpolation, channel shuffle, squeeze-excitation, weight sharing: the modified gradient ---------------


class Hourglass(nn.Module):
    """conv → max-pool → conv → F.interpolate back up (bilinear) → concatenated with the skip → conv →
    nn.Upsample (nearest) → mean → fc: a small U-Net with a head."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.inner = nn.Conv2d(4, 6, 3, padding=1)
        self.merge = nn.Conv2d(10, 5, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        skip = F.relu(self.down(x))
        deep = F.relu(self.inner(self.pool(skip)))
        up = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.relu(self.merge(torch.cat([skip, up], 1)))
        return self.fc(self.up(x).mean((2, 3)))


class Shuffle(nn.Module):
    """A ShuffleNet V2 unit: chunk, a branch (1×1, depthwise 3×3, 1×1), concatenation, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                    nn.Conv2d(4, 4, 1), nn.ReLU())
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x1, x2 = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1), 2)
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


class Excited(nn.Module):
    """conv → ReLU → squeeze-excitation (torchvision's) → conv → Hardswish → SE with Hardsigmoid → pool → fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.se1 = SqueezeExcitation(8, 4)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.se2 = SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.se1(self.relu(self.conv1(x)))
        x = self.se2(self.act(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class Shared(nn.Module):
    """One conv applied twice (its steps conv and conv@1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 256, 5)

    def forward(self, x):
        return self.fc(self.relu(self.conv(self.relu(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("network", [Hourglass, Shuffle, Excited, Shared])
def test_equal_to_the_modified_gradient(network):
    """LRP-0 everywhere (biases and all) equals the modified gradient; with biases zero it sums to the logit."""
    model = seeded(network(), seed=7)
    explanation = Explainer(model, "zero").explain(X)
    assert_logits(explanation, model, X)
    _, reference = modified_gradient_lrp0(model, X)
    assert_equal(explanation.relevances["input"], reference)
    zero = Explainer(zero_biases(model), "zero").explain(X)
    assert abs(float(zero.relevances["input"].sum() / zero.logits.max()) - 1) <= 1e-5
    paper = Explainer(model).explain(X)  # and the default preset runs on it
    assert torch.isfinite(paper.relevances["input"]).all() and paper.relevances["input"].abs().sum() > 0


def test_squeeze_excitation_gate_branches_get_nothing():
    model = seeded(Excited(), seed=7)
    explanation = Explainer(model).explain(X)
    for name in ("se1.fc1", "se1.fc2", "se2.fc1", "se2.fc2"):
        relevance = explanation.relevances.get(name)
        assert relevance is None or not relevance.any(), name


# --- 13. bad inputs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return seeded(Convs(CONVS["same"][0], CONVS["same"][1]), seed=8)


BAD_INPUTS = {
    "no batch dimension (3, 224, 224)": lambda: torch.rand(3, 224, 224),
    "(1, 3, 224)": lambda: torch.rand(1, 3, 224),
    "uint8": lambda: (torch.rand(1, 3, 16, 16) * 255).to(torch.uint8),
    "a list": lambda: [torch.rand(1, 3, 16, 16)],
    "a numpy array": lambda: np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32),
    "one channel for three": lambda: torch.rand(1, 1, 16, 16),
    "four channels for three": lambda: torch.rand(1, 4, 16, 16),
    "NaN": lambda: torch.full((1, 3, 16, 16), float("nan")),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_a_bad_input_is_one_line(small, name):
    explainer = Explainer(small, "zero")
    with pytest.raises(LRPWidgetsError) as error:
        explainer.explain(BAD_INPUTS[name]())
    one_line(error.value)


# --- 14. bad and good targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["2", 2.7, torch.tensor(2.5), 5, -1, [1, 2], "castle"],
                         ids=["'2'", "2.7", "tensor(2.5)", "5 of 5", "-1", "two targets, one image", "a name"])
def test_a_bad_target_is_a_target_error(small, target):
    with pytest.raises(TargetError) as error:
        Explainer(small, "zero").explain(X, target=target)
    one_line(error.value)


@pytest.mark.parametrize("target", [2, np.int64(2), torch.tensor(2), [2], torch.tensor([2])],
                         ids=["2", "np.int64", "tensor(2)", "[2]", "tensor([2])"])
def test_integer_targets_are_accepted(small, target):
    explanation = Explainer(small, "zero").explain(X, target=target)
    assert explanation.targets.tolist() == [2]
    assert abs(float(explanation.relevances["input"].sum())) > 0


# --- 15. unsupported operations: named -----------------------------------------------------------------------------


class GroupNormed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4 * 256, 5)

    def forward(self, x):
        return self.fc(F.relu(self.norm(self.conv(x))).flatten(1))


class Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 256, 5)

    def forward(self, x):
        return self.fc(torch.sort(self.conv(x), dim=1).values.flatten(1))


class Normalised(Sorted):
    def forward(self, x):
        h = self.conv(x)
        return self.fc((h / h.norm(dim=1, keepdim=True)).flatten(1))


@pytest.mark.parametrize("network, step", [(GroupNormed, "norm"), (Sorted, "sort"), (Normalised, "truediv")],
                         ids=["GroupNorm", "torch.sort", "x / x.norm()"])
def test_an_unsupported_operation_is_named(network, step):
    with pytest.raises(ModelError) as error:
        Explainer(seeded(network(), seed=9)).explain(X)
    one_line(error.value)
    assert f"'{step}" in str(error.value), str(error.value)
