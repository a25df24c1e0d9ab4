"""A user's own networks, named by import path in the CLI tests: ``--model tests.user_models:build``."""
import torch
from torch import nn

NUMBER = 3


class SmallNet(nn.Module):
    """32×32 inputs only (the classifier's size is fixed), three classes."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 8 * 8, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build() -> nn.Module:
    return SmallNet()


net = SmallNet()


def broken() -> nn.Module:
    raise RuntimeError("no network today")


def not_a_module() -> list:
    return [1, 2]


def pooled() -> nn.Module:
    """Any input size (global average pooling), three classes."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
