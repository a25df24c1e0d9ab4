"""The benchmark's models and input: VGG16 (and ResNet-50, EfficientNet-B0, ConvNeXt-T), random weights with
random biases (and batch-norm statistics), no in-place activations; the castle image."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision

from lrp_widgets.engine.images import open_image, preprocess

IMAGES = Path(os.environ.get("LRP_WIDGETS_IMAGES", Path(__file__).resolve().parents[2] / "shared" / "images"))


def vgg16(device: str = "cpu") -> torch.nn.Module:
    return model("vgg16", device)


def model(name: str, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.get_model(name).eval()
    with torch.no_grad():
        for module in net.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.normal_(0, 0.05)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, torch.nn.Linear) and not module.weight.any():  # ViT's zero head: every logit 0
                module.reset_parameters()
            if getattr(module, "inplace", False):  # ReLU, EfficientNet's SiLU: as the peers run them
                module.inplace = False
    return net.requires_grad_(False).to(device)


def batch(size: int, device: str = "cpu") -> torch.Tensor:
    x = preprocess(open_image(IMAGES / "n02980441_castle.JPEG"))[None]
    return x.expand(size, -1, -1, -1).contiguous().to(device)
