"""Bad input never costs the user their session: a clear message in the app, the previous explanation
kept; and the same image, weights and settings give bit-identical results across runs and processes."""
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrp_widgets.engine import Explainer
from lrp_widgets.engine.images import open_image
from lrp_widgets.errors import ImageError
from lrp_widgets.views import Explorer

from .conftest import CASTLE


@pytest.fixture(scope="module")
def explorer():
    return Explorer(model="vgg11", weights="random", image=str(CASTLE), background=False)


def encode(image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


BAD_UPLOADS = {
    "empty.jpg": (b"", "is empty"),
    "notes.jpg": (b"just some text, not a picture", "not an image"),
    "cut.jpg": (CASTLE.read_bytes()[:3000], "not an image we can read (truncated after"),
}


@pytest.mark.parametrize("name", ["empty.jpg", "notes.jpg", "cut.jpg", "over-limit.png", "bomb.png"])
def test_bad_uploads_leave_a_message_and_the_explanation(explorer, name, monkeypatch):
    state = explorer.state
    before = state.bundle
    if name == "over-limit.png":
        data, message = encode(Image.new("RGB", (300, 300))), "over the"
        monkeypatch.setattr(explorer.picker, "max_bytes", 100)
    elif name == "bomb.png":
        data, message = encode(Image.new("RGB", (64, 64))), "too many pixels"
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    else:
        data, message = BAD_UPLOADS[name]
    explorer.picker.load(lambda: open_image(data, explorer.picker.max_bytes, name=name), name)
    assert state.error.startswith(name) and message in state.error and "Traceback" not in state.error
    assert state.bundle is before and "lrp-error" in explorer.status.message.value
    state.error = ""


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "LA", "P", "L", "1x1", "4000x3", "GIF"])
def test_odd_but_valid_images_are_explained(explorer, mode):
    if mode == "1x1":
        data = encode(Image.new("RGB", (1, 1), (200, 10, 10)))
    elif mode == "4000x3":
        data = encode(Image.new("RGB", (4000, 3), (10, 200, 10)))
    elif mode == "GIF":
        frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
        data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    elif mode == "I;16":
        data = encode(Image.fromarray(np.full((40, 30), 30000, dtype=np.uint16)))
    else:
        data = encode(Image.open(CASTLE).convert(mode), "JPEG" if mode == "CMYK" else "PNG")
    state = explorer.state
    explorer.picker.load(lambda: open_image(data), f"odd-{mode}")
    result = state.result
    assert state.error == "" and result.request.image_name == f"odd-{mode}" and result.complete
    relevance = result.bundle.input_relevance
    assert relevance.shape == (3, 224, 224) and torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    assert result.bundle.picture.shape == (224, 224, 3)
    if mode == "GIF":  # the first frame: red
        assert tuple(result.bundle.picture[112, 112]) == (255, 0, 0)


def test_class_out_of_range_in_the_app(explorer):
    state = explorer.state
    before = state.bundle
    state.target = 5000
    assert "out of range" in state.error and state.bundle is before
    state.target = before.target
    assert state.error == ""


def test_bad_weights_and_model_in_the_app(tmp_path):
    explorer = Explorer(model="vgg11", weights=str(tmp_path / "missing.pth"), image=str(CASTLE), background=False)
    state = explorer.state
    assert "does not exist" in state.error and state.bundle is None
    state.weights = "random"
    assert state.error == "" and state.bundle is not None
    before = state.bundle
    state.model_name = "resnet9"
    assert "unknown model 'resnet9'" in state.error and state.bundle is before


def test_missing_imagenet_weights_offline_in_the_app(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    explorer = Explorer(model="vgg11", weights="imagenet", image=str(CASTLE), background=False)
    assert "--weights PATH" in explorer.state.error and explorer.state.bundle is None
    explorer.state.weights = "auto"  # falls back to random weights, flagged
    assert explorer.state.bundle is not None and not explorer.state.pretrained
    assert "untrained" in explorer.status.banner.value


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_input_is_refused(vgg16, value):
    x = torch.zeros(1, 3, 224, 224)
    x[0, 1, 5, 5] = value
    with pytest.raises(ImageError, match="NaN or infinite"):
        Explainer(vgg16).explain(x)


DIGEST = """
import hashlib, sys, torch
sys.path.insert(0, {root!r})
from tests.conftest import random_model, CASTLE
from lrp_widgets.engine import Explainer, preprocess
from lrp_widgets.engine.images import open_image
torch.set_num_threads(2)
e = Explainer(random_model("vgg11")).explain(preprocess(open_image(CASTLE))[None])
print(hashlib.sha256(e.relevances["input"].numpy().tobytes()).hexdigest())
"""


def digest(model, x) -> str:
    return hashlib.sha256(Explainer(model).explain(x).relevances["input"].numpy().tobytes()).hexdigest()


def test_results_are_bit_identical_across_runs_and_processes(castle):
    from .conftest import random_model

    torch.set_num_threads(2)
    model = random_model("vgg11")
    first = digest(model, castle)
    assert digest(model, castle) == first
    code = DIGEST.format(root=str(Path(__file__).parents[1]))
    others = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(2)}
    assert others == {first}
