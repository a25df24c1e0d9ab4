"""The deconvnet: equal to Captum's NeuronDeconvolution on VGG16, batched = one at a time, a tiny network
by hand, bad layers and channels, and the ``deconv`` command."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrp_widgets.cli import main
from lrp_widgets.engine import Explainer
from lrp_widgets.engine.deconv import deconvolve, record
from lrp_widgets.engine.images import open_image, preprocess
from lrp_widgets.engine.models import UntrainedWeightsWarning, load_model
from lrp_widgets.errors import TargetError
from .peers import captum_deconvolution

from .conftest import CASTLE


@pytest.fixture(scope="module")
def explanation(vgg16, castle):
    return Explainer(vgg16).explain(castle)


def strongest(explanation, layer: str, k: int = 1) -> list[int]:
    """The channels with the largest maximum activation (never a dead one)."""
    out = explanation.activations[layer][0]
    return out.reshape(out.shape[0], -1).amax(1).topk(k).indices.tolist()


@pytest.mark.parametrize("mode", ["map", "max"])
@pytest.mark.parametrize("layer", ["features.2", "features.14", "features.28", "classifier.0"])
def test_equals_captum_neuron_deconvolution(vgg16, castle, explanation, layer, mode):
    channel = strongest(explanation, layer)[0]
    ours = deconvolve(explanation, layer, [channel], mode=mode)
    theirs = captum_deconvolution(vgg16, layer, channel, mode)(castle)
    assert theirs.abs().max() > 0
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_strides_padding_pools_and_linear_equal_captum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(), nn.Linear(24, 8), nn.ReLU(),
                          nn.Linear(8, 3)).eval()
    x = torch.randn(1, 3, 23, 22)
    explanation = Explainer(model, "epsilon").explain(x)
    for layer, channel in [("3", 2), ("9", int(explanation.activations["9"].argmax()))]:
        ours = deconvolve(explanation, layer, [channel])
        theirs = captum_deconvolution(model, layer, channel)(x)
        assert theirs.abs().max() > 0 and torch.allclose(ours, theirs, atol=1e-6 * theirs.abs().max())


def test_batched_equals_one_at_a_time(explanation):
    channels = strongest(explanation, "features.14", 3) + [0]
    for mode in ("map", "max"):
        batched = deconvolve(explanation, "features.14", torch.tensor(channels), mode=mode)
        single = torch.cat([deconvolve(explanation, "features.14", c, mode=mode) for c in channels])
        assert batched.shape == (4, 3, 224, 224)
        assert torch.allclose(batched, single, rtol=1e-5, atol=1e-6 * single.abs().max())


def test_record_stores_what_deconvolve_needs(vgg16, castle, explanation):
    recorded = record(vgg16, castle)
    assert torch.equal(deconvolve(recorded, "features.28", [5]), deconvolve(explanation, "features.28", [5]))


def conv(weights, bias):
    w = torch.tensor(weights, dtype=torch.float32)
    layer = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:])
    layer.weight.data, layer.bias.data = w, torch.tensor(bias, dtype=torch.float32)
    return layer


def tiny():
    """conv 1×1 (×2) → ReLU → max-pool 2×2 → conv 2×2 (two channels) → ReLU → Flatten."""
    second = conv([[[[1.0, -1.0], [2.0, 0.0]]], [[[0.0, 1.0], [-1.0, 0.0]]]], [0.5, 0.0])
    model = nn.Sequential(conv([[[[2.0]]]], [0.0]), nn.ReLU(), nn.MaxPool2d(2), second, nn.ReLU(), nn.Flatten())
    x = torch.tensor([[1.0, 5.0, 0.0, 2.0],
                      [3.0, 2.0, 7.0, 1.0],
                      [0.0, 4.0, 1.0, 1.0],
                      [6.0, 0.0, 0.0, 3.0]])[None, None]
    return Explainer(model.eval(), "epsilon").explain(x)


def test_tiny_network_by_hand():
    # pooled 2x: [[10 at (0,1), 14 at (1,2)], [12 at (3,0), 6 at (3,3)]]
    # channel 0: a = 10 - 14 + 24 + 0.5 = 20.5 → 20.5·w = [[20.5, -20.5], [41, 0]] → unpooled to the
    # switches → ReLU drops -20.5 at (1,2) → conv 1×1 transposed: ×2
    # channel 1: a = 14 - 12 = 2 → [[0, 2], [-2, 0]] → 2 at (1,2), -2 at (3,0) dropped → ×2
    expected = torch.zeros(2, 1, 4, 4)
    expected[0, 0, 0, 1], expected[0, 0, 3, 0], expected[1, 0, 1, 2] = 41.0, 82.0, 4.0
    assert torch.equal(deconvolve(tiny(), "3", [0, 1]), expected)


def test_tiny_network_first_layer_map_and_max():
    explanation = tiny()
    x = explanation.inputs
    assert torch.equal(deconvolve(explanation, "0", 0), 4 * x)  # relu(2x) back through ×2
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 2] = 2 * 14.0  # the maximum 2·7 alone
    assert torch.equal(deconvolve(explanation, "0", 0, mode="max"), expected)


def test_starting_above_a_relu_or_pool_equals_the_layer_below():
    explanation = tiny()
    assert torch.equal(deconvolve(explanation, "4", [0, 1]), deconvolve(explanation, "3", [0, 1]))
    assert torch.equal(deconvolve(explanation, "1", 0, mode="max"), deconvolve(explanation, "0", 0, mode="max"))


@pytest.mark.parametrize("layer, channels, message", [
    ("features.99", [0], "unknown layer 'features.99'"),
    ("features.28", [512], "channel 512 out of range: layer 'features.28' has channels 0–511"),
    ("features.2", [3, -1], "channel -1 out of range: layer 'features.2' has channels 0–63"),
    ("classifier.6", [1000], "channel 1000 out of range: layer 'classifier.6' has channels 0–999"),
    ("features.2", [], "no channel given"),
])
def test_bad_layer_or_channel(explanation, layer, channels, message):
    with pytest.raises(TargetError, match=message):
        deconvolve(explanation, layer, channels)


def test_bad_image_or_mode(explanation):
    with pytest.raises(TargetError, match="image 1 out of range"):
        deconvolve(explanation, "features.2", [0], image=1)
    with pytest.raises(ValueError, match="unknown mode"):
        deconvolve(explanation, "features.2", [0], mode="mean")


def test_cli_writes_png_and_npy(tmp_path, capsys):
    png, npy = tmp_path / "deconv.png", tmp_path / "sub" / "deconv.npy"
    assert main(["deconv", str(CASTLE), "--layer", "features.28", "--channel", "5", "--weights", "random",
                 "--out", str(png), "--npy", str(npy)]) == 0
    assert Image.open(png).size == (448, 224)
    with pytest.warns(UntrainedWeightsWarning):
        model = load_model("vgg16", "random").module
    expected = deconvolve(record(model, preprocess(open_image(CASTLE))[None]), "features.28", [5])[0]
    saved = np.load(npy)
    assert saved.dtype == np.float32 and np.allclose(saved, expected.numpy())
    assert "random (untrained) weights" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deconv.png", "sub"]


@pytest.mark.parametrize("args, message", [
    (["--layer", "features.99", "--channel", "0"], "unknown layer 'features.99'"),
    (["--layer", "features.18", "--channel", "512"], "layer 'features.18' has channels 0–511"),
])
def test_cli_bad_layer_or_channel_gives_one_line_status_2_and_no_output(tmp_path, capsys, args, message):
    png, npy = tmp_path / "out" / "d.png", tmp_path / "d.npy"
    assert main(["deconv", str(CASTLE), *args, "--model", "vgg11", "--weights", "random", "--mode", "max",
                 "--out", str(png), "--npy", str(npy)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert list(tmp_path.iterdir()) == []
