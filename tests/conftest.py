"""Shared fixtures: the case-study images and random-initialised models with random biases."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from lrp_widgets.engine.images import preprocess

IMAGES = Path(os.environ.get("LRP_WIDGETS_IMAGES", Path(__file__).resolve().parents[2] / "shared" / "images"))
CASTLE = IMAGES / "n02980441_castle.JPEG"


#: the files that drive a real browser, a Binder session, notebooks or a deployment: minutes each
SLOW_FILES = {"test_app_atlas.py", "test_app_browser.py", "test_app_layout.py", "test_app_transformer.py",
              "test_binder_session.py", "test_notebooks.py", "test_deploy.py"}


def pytest_collection_modifyitems(items) -> None:
    """Mark the tests of ``SLOW_FILES`` slow: ``./run test -m "not slow"`` runs the others in minutes."""
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


def run_readme_example(after: str) -> dict:
    """Run the first ```python block of README.md after the text ``after``; its namespace."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split(after)[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def random_model(name: str = "vgg16", seed: int = 0) -> torch.nn.Module:
    """A torchvision model with random weights *and* random biases and BN statistics (torchvision zeroes
    biases, which would leave bias handling untested)."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.normal_(0, 0.05)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
    return model.requires_grad_(False)


@pytest.fixture(scope="session")
def castle_image() -> Image.Image:
    return Image.open(CASTLE).convert("RGB")


@pytest.fixture(scope="session")
def castle(castle_image) -> torch.Tensor:
    return preprocess(castle_image)[None]


@pytest.fixture(scope="session")
def vgg16() -> torch.nn.Module:
    return random_model("vgg16")
