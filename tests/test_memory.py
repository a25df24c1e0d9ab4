"""What an explanation keeps in memory (issue 11): memory-mapped weights, int32 pooling switches,
propagation in byte-sized batches, the explanation cache sized in bytes — with results unchanged."""
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from lrp_widgets.analysis.bundle import Bundle
from lrp_widgets.analysis.graph import neuron_graph
from lrp_widgets.analysis.heatmaps import path_relevance
from lrp_widgets.analysis.paths import k_best_paths
from lrp_widgets.analysis.threshold import (
    DEFAULT_ALPHAS,
    get_optimizer,
    masked_heatmaps,
)
from lrp_widgets.engine import lrp
from lrp_widgets.engine.models import (
    LoadedModel,
    UntrainedWeightsWarning,
    _checked_state,
    load_model,
    weights_cache,
)
from lrp_widgets.errors import WeightsError
from lrp_widgets.views import ExplorerState, Session

from .conftest import CASTLE


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return weights_cache()


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def random_vgg11():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return load_model("vgg11", "random")


def test_random_weights_are_mapped_from_one_file_and_equal_torchvisions_seeded_init(cache):
    model = random_vgg11()
    path = cache / "vgg11-random-seed0.pt"
    assert path.is_file() and str(path) in mapped_files()  # file-backed pages, not anonymous memory
    torch.manual_seed(0)
    reference = torchvision.models.vgg11(weights=None).state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.module.state_dict().items())
    modified = path.stat().st_mtime_ns
    again = random_vgg11()  # the second load maps the same file, not a new one
    assert path.stat().st_mtime_ns == modified and torch.equal(again.module.features[0].weight, model.module.features[0].weight)


def test_a_damaged_cache_file_is_made_again(cache):
    random_vgg11()
    path = cache / "vgg11-random-seed0.pt"
    path.write_bytes(b"not a checkpoint")
    model = random_vgg11()
    assert path.stat().st_size > 100e6 and model.module.features[0].weight.abs().sum() > 0


def test_a_checkpoint_whose_hash_does_not_match_is_refused_and_removed(tmp_path):
    checkpoint = tmp_path / "vgg11-8a719046.pth"
    torch.save({"weight": torch.zeros(3)}, checkpoint)
    with pytest.raises(WeightsError, match="is damaged .* removed: run again to download it"):
        _checked_state(checkpoint)
    assert not checkpoint.exists()


def test_a_users_weights_file_is_mapped_and_other_float_types_become_float32(tmp_path):
    state = random_vgg11().module.state_dict()
    torch.save(state, tmp_path / "mine.pt")
    mine = load_model("vgg11", str(tmp_path / "mine.pt"))
    assert torch.equal(mine.module.features[0].weight, state["features.0.weight"])
    assert str(tmp_path / "mine.pt") in mapped_files()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "half.pt")
    weight = load_model("vgg11", str(tmp_path / "half.pt")).module.features[0].weight
    assert weight.dtype == torch.float32 and torch.equal(weight, state["features.0.weight"].half().float())


@pytest.fixture(scope="module")
def explanation():
    from lrp_widgets.engine.predict import explain_image

    return explain_image(random_vgg11(), Image.open(CASTLE).convert("RGB"))


def test_switches_are_int32_and_nbytes_counts_what_is_kept(explanation):
    assert {t.dtype for t in explanation.maxpool_indices.values()} == {torch.int32}
    activations = sum(t.numel() * 4 for name, t in explanation.activations.items() if "features" in name)
    assert activations < explanation.nbytes < 4 * activations  # activations, relevances, z; not the weights


@pytest.mark.parametrize("budget", [1, 20 * 2**20])
def test_batched_propagation_equals_one_batch(explanation, monkeypatch, budget):
    """Split into batches of one row (budget 1 byte) or a few, every analysis gives the same numbers."""
    layer = explanation.weighted[-4]
    kept = torch.stack([get_optimizer(explanation, layer, alpha).kept for alpha in DEFAULT_ALPHAS[::4]])
    graph = neuron_graph(explanation, 4)
    paths = k_best_paths(graph, 3)
    whole = (masked_heatmaps(explanation, layer, kept), graph.flows, path_relevance(explanation, paths))
    monkeypatch.setattr(lrp, "PROPAGATION_BYTES", budget)
    calls = []
    original = lrp.Explanation.propagate
    monkeypatch.setattr(lrp.Explanation, "propagate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    split = (masked_heatmaps(explanation, layer, kept), neuron_graph(explanation, 4).flows, path_relevance(explanation, paths))
    assert len(calls) > 3 + len(graph.flows)  # it did split
    assert torch.allclose(whole[0], split[0], rtol=1e-5, atol=1e-7 * whole[0].abs().max())
    assert all(torch.allclose(whole[1][pair], split[1][pair], rtol=1e-5, atol=1e-6) for pair in whole[1])
    assert torch.allclose(whole[2], split[2], rtol=1e-5, atol=1e-7 * whole[2].abs().max())


def test_the_explanation_cache_is_sized_in_bytes(monkeypatch):
    state = ExplorerState(model_name="vgg11", weights="random")
    session = Session(state, background=False, cache_bytes=1)  # room for none: the newest is kept anyway
    state.image = Image.open(CASTLE)
    first = state.bundle
    held = []  # explanations the session holds while it computes a new one
    original = Bundle.explain
    monkeypatch.setattr(Bundle, "explain", lambda *a, **k: held.append(len(set(session.bundles.values()))) or original(*a, **k))
    state.target = 1
    assert held == [0]  # the old one was let go before the new one was computed
    assert list(dict.fromkeys(session.bundles.values())) == [state.bundle]
    session.cache_bytes = 3 * first.explanation.nbytes  # room for two besides the one being computed
    state.target = 2
    state.target = 3
    assert len(set(session.bundles.values())) == 3
    state.target = 4
    kept = list(dict.fromkeys(session.bundles.values()))
    assert len(kept) == 3 and kept[-1] is state.bundle  # the oldest went first


SMALL_MODELS = ("shufflenet_v2_x0_5", "mnasnet0_5", "squeezenet1_0", "mobilenet_v3_small", "resnet18")


def _held(session) -> tuple[set, int]:
    """The models the session holds, and the bytes it holds for going back: every explanation but the newest,
    and the models of those that are not the current request's."""
    bundles = list(dict.fromkeys(session.bundles.values()))
    current = (session.request.model_name, session.request.weights)
    others = {(b.model.name, b.model.weights): b.model for b in bundles[:-1]} if bundles else {}
    return set(session.models), (sum(b.explanation.nbytes for b in bundles[:-1])
                                 + sum(session_model_bytes(m) for key, m in others.items() if key != current))


def session_model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.module.parameters(), *model.module.buffers()))


@pytest.mark.parametrize("budget", ["none", "default"])
def test_switching_models_keeps_only_the_models_the_cache_needs_and_the_users_own(budget):
    """Six networks in a row: the session keeps the explanations and models that fit its budget, never a model
    no kept explanation needs, and always the user's own model."""
    state = ExplorerState(model_name="vgg11", weights="random")
    session = Session(state, background=False)
    own = LoadedModel.of(torchvision.models.squeezenet1_1(num_classes=3).eval(), name="mine")
    session.add_model(own)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        state.model_name = SMALL_MODELS[0]
        state.image = Image.open(CASTLE)
        if budget == "none":
            session.cache_bytes = 1
        for name in SMALL_MODELS[1:]:
            state.model_name = name
            models, held = _held(session)
            assert ("mine", "own") in models and (name, "random") in models
            assert {(b.model.name, b.model.weights) for b in session.bundles.values()} <= models
            assert held <= session.cache_bytes
            if budget == "none":
                assert models == {("mine", "own"), (name, "random")}
    if budget == "default":  # 400 MB hold more than the current small model: the one before is kept for going back
        assert (SMALL_MODELS[-2], "random") in models
