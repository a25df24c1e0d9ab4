"""CUDA: the engine, the analyses and the app state run on the GPU and agree with the CPU."""
import pytest
import torch

from lrp_widgets.analysis.graph import neuron_graph
from lrp_widgets.analysis.heatmaps import path_relevance
from lrp_widgets.analysis.paths import k_best_paths
from lrp_widgets.engine import Explainer
from lrp_widgets.engine.deconv import deconvolve

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_explanation_paths_and_deconv_on_cuda_equal_cpu(vgg16, castle):
    cpu = Explainer(vgg16).explain(castle)
    gpu = Explainer(vgg16.to("cuda")).explain(castle.to("cuda"))
    try:
        reference = cpu.relevances["input"]
        assert ((gpu.relevances["input"].cpu() - reference).abs().max() / reference.abs().max()) < 1e-3
        paths = k_best_paths(neuron_graph(gpu), 5)
        assert path_relevance(gpu, paths).is_cuda
        assert deconvolve(gpu, "features.28", [1, 2]).is_cuda
    finally:
        vgg16.to("cpu")


def test_explorer_on_cuda():
    from lrp_widgets.views import Explorer

    from .conftest import CASTLE

    explorer = Explorer(model="vgg11", weights="random", image=str(CASTLE), background=False, device="cuda")
    assert explorer.state.error == "" and explorer.state.bundle.explanation.inputs.is_cuda
    explorer.state.selected = ("features.18", 3)
    assert "features.18" in explorer.deconv.label.value
