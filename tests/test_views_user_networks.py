"""A user's network with squeeze-and-excitation gates, a concatenation and upsampling shows every view: the
graph's default layers are the convolutions relevance reaches (never those inside a gate), paths, the sweep
and the deconvolution of a clicked neuron."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

from lrp_widgets.views import Explorer

from .conftest import CASTLE
from .test_views import click, decoded


class Excite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, 2, 1)
        self.fc2 = nn.Conv2d(2, channels, 1)

    def forward(self, x):
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class GatedNet(nn.Module):
    """conv → SE gate → [conv, upsampled strided conv] → cat → conv → pool → linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.se = Excite(8)
        self.left = nn.Conv2d(8, 4, 3, padding=1)
        self.down = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.mix = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.se(F.relu(self.stem(x)))
        up = F.interpolate(F.relu(self.down(x)), scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.mix(torch.cat([F.relu(self.left(x)), up], 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_a_gated_concatenating_upsampling_network_shows_every_view():
    torch.manual_seed(0)
    net = GatedNet().eval()
    preprocess = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()])
    explorer = Explorer(model=net, preprocess=preprocess, categories=list("abcde"), mean=(0.5,) * 3, std=(0.25,) * 3,
                        image=str(CASTLE), background=False)
    state, result = explorer.state, explorer.state.result
    assert state.error == "" and result.complete
    assert result.graph.layers == ["stem", "cat", "mix", "fc"]  # not se.fc1 / se.fc2, nor the parallel left / down
    assert all(len(result.graph.nodes[layer]) > 0 for layer in result.graph.layers)
    assert result.paths and len(explorer.graph.cytoscape.graph.edges) > 0
    assert result.layer == "mix" and len(result.sweep.alphas) > 0 and np.isfinite(result.sweep.mse).all()
    assert not explorer.relevance.figure.blank and decoded(explorer.relevance.figure).shape == (32, 32, 3)
    node = result.graph.nodes["cat"][0]
    click(explorer, "cat", node.index)
    reconstruction = decoded(explorer.deconv.relevance)
    assert reconstruction.shape == (32, 32, 3) and reconstruction.std() > 0
