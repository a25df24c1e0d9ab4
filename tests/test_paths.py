"""Neuron graph, paths, Algorithm 1, MSE/SMAPE, conditional heatmaps: by hand and against zennit-crp."""
import itertools
import random
import sys

import pytest
import torch
from torch import nn

from lrp_widgets.analysis.graph import channel_relevance, neuron_graph
from lrp_widgets.analysis.heatmaps import (activation_maps, conditional_relevance, neuron_relevance, path_activation,
                                           path_relevance, union_relevance)
from lrp_widgets.analysis.paths import best_paths, k_best_paths, path_count
from lrp_widgets.analysis.threshold import get_optimizer, mse, smape, threshold_sweep
from lrp_widgets.engine import Explainer
from lrp_widgets.engine.composites import Composite
from lrp_widgets.engine.rules import Zero
from lrp_widgets.errors import TargetError
from .peers import peer_copy, zennit_composite

TOLERANCE = 1e-4


def brute_force(flows):
    sizes = [len(flows[0])] + [len(m[0]) for m in flows]
    paths = []
    for positions in itertools.product(*[range(n) for n in sizes]):
        score = sum(flows[l][positions[l]][positions[l + 1]] for l in range(len(flows)))
        paths.append((score, list(positions)))
    return sorted(paths, key=lambda p: -p[0])


@pytest.mark.parametrize("seed", range(5))
def test_k_best_paths_equal_brute_force_on_random_layered_graphs(seed):
    rng = random.Random(seed)
    sizes = [1] + [rng.randint(1, 4) for _ in range(4)]
    flows = [[[rng.uniform(-1, 1) for _ in range(b)] for _ in range(a)] for a, b in zip(sizes, sizes[1:])]
    expected = brute_force(flows)[:6]
    got = best_paths(flows, 6)
    assert [p for _, p in got] == [p for _, p in expected]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expected])


def test_longest_path_by_hand():
    # class → {a: 1, b: 5}; a → {c: 0, d: 2}; b → {c: 3, d: 1}: best is class-b-c (8), then class-b-d (6)
    assert best_paths([[[1.0, 5.0]], [[0.0, 2.0], [3.0, 1.0]]], 3) == [(8.0, [0, 1, 0]), (6.0, [0, 1, 1]),
                                                                        (3.0, [0, 0, 1])]


def two_layer_net():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    model[0].weight.data = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    model[2].weight.data = torch.tensor([[1.0, 2.0]])
    return model.eval().requires_grad_(False)


def test_flows_by_hand_on_a_two_layer_network():
    model = two_layer_net()
    lrp0 = Composite("zero", lambda convs, linears: {n: Zero() for n in convs + linears})
    explanation = Explainer(model, lrp0).explain(torch.tensor([[1.0, 1.0]]))
    # hidden a = relu(3, 2) = (3, 2); output = 3 + 4 = 7 = R_out
    # R_hidden = a·w·R/z = (3·1·7/7, 2·2·7/7) = (3, 4)
    # flows hidden→input under LRP-0: from h0 (z=3): x·w = (1, 2) → (1, 2); from h1 (z=2): (3, -1)/2·4 = (6, -2)
    graph = neuron_graph(explanation, top_n=2)
    assert graph.layers == ["0", "2"]
    assert [(n.index, n.relevance) for n in graph.nodes["0"]] == [(1, 4.0), (0, 3.0)]
    assert graph.flows["2", "0"].tolist() == [[4.0, 3.0]]
    explanation_in = explanation.propagate(explanation.relevances["0"].expand(2, -1), "0",
                                           channels={"0": torch.tensor([0, 1])})
    assert explanation_in.tolist() == [[1.0, 2.0], [6.0, -2.0]]


def test_graph_json_and_networkx_export():
    model = two_layer_net()
    graph = neuron_graph(Explainer(model).explain(torch.tensor([[1.0, 1.0]])), top_n=2)
    data = graph.to_cytoscape()
    assert {tuple(sorted(n["data"])) for n in data["nodes"]} == {("id", "index", "layer", "relevance")}
    assert len(data["edges"]) == 2 and {"source", "target", "weight"} <= set(data["edges"][0]["data"])
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == 3 and nx_graph.number_of_edges() == 2
    assert path_count(graph) == 2


def test_networkx_export_without_networkx_says_what_to_install(monkeypatch):
    graph = neuron_graph(Explainer(two_layer_net()).explain(torch.tensor([[1.0, 1.0]])), top_n=2)
    monkeypatch.setitem(sys.modules, "networkx", None)  # as if not installed (networkx is a test extra)
    with pytest.raises(ModuleNotFoundError, match="pip install networkx"):
        graph.to_networkx()


@pytest.fixture(scope="module")
def explanation(vgg16, castle):
    return Explainer(vgg16).explain(castle)


@pytest.fixture(scope="module")
def graph(explanation):
    return neuron_graph(explanation, top_n=8)


def test_vgg16_graph_has_16_layers_and_the_class_node(graph, explanation):
    assert len(graph.layers) == 16 and graph.layers[0] == "features.0"
    assert graph.class_node.index == int(explanation.targets[0])
    assert all(len(graph.nodes[layer]) == 8 for layer in graph.layers[:-1])
    assert path_count(graph) == 8 ** 15


def test_vgg16_flows_add_up_to_the_relevance_restricted_to_kept_upper_nodes(graph, explanation):
    for upper, lower in [("features.28", "features.26"), ("features.17", "features.14"), ("classifier.0", "features.28"),
                         ("features.2", "features.0")]:
        kept_upper = [n.index for n in graph.nodes[upper]]
        restricted = explanation.propagate(explanation.relevances[upper], upper, lower,
                                           masks=conditional_masks(explanation, upper, kept_upper))
        sums = restricted.flatten(2).sum(2)[0] if restricted.dim() > 2 else restricted[0]
        expected = sums[[n.index for n in graph.nodes[lower]]]
        torch.testing.assert_close(graph.flows[upper, lower].sum(0), expected, rtol=1e-4, atol=1e-7)


def conditional_masks(explanation, layer, indices):
    from lrp_widgets.analysis.heatmaps import channel_masks

    return channel_masks(explanation, {layer: indices})


def test_with_every_channel_kept_flows_add_up_to_the_node_relevance(explanation):
    graph = neuron_graph(explanation, top_n=512, layers=["features.26", "features.28"])
    torch.testing.assert_close(graph.flows["features.28", "features.26"].sum(0).double(),
                               channel_relevance(explanation, "features.26")[[n.index for n in graph.nodes["features.26"]]].double(),
                               rtol=1e-4, atol=1e-6)


def test_k_best_paths_are_sorted_and_scored_by_their_flows(graph):
    paths = k_best_paths(graph, 5)
    assert len(paths) == 5 and [p.score for p in paths] == sorted((p.score for p in paths), reverse=True)
    for path in paths:
        assert path.nodes[0] == graph.class_node and len(path.nodes) == 16
        assert path.score == pytest.approx(sum(graph.flow(u, v) for u, v in zip(path.nodes, path.nodes[1:])), rel=1e-5)


def crp_heatmaps(model, x, conditions):
    from crp.attribution import CondAttribution

    model = peer_copy(model)
    data = x.clone().requires_grad_()
    return CondAttribution(model).__call__(data, conditions, zennit_composite(model, "paper")).heatmap


def assert_close_to(ours, peer):
    error = float((ours - peer).abs().max() / peer.abs().max())
    assert error <= TOLERANCE, f"{error:.2e} × max |R|"


def test_path_heatmaps_equal_zennit_crp(vgg16, castle, graph, explanation):
    paths = k_best_paths(graph, 5)
    target = int(explanation.targets[0])
    conditions = [{"y": [target], **{n.layer: [n.index] for n in p.nodes[1:]}} for p in paths]
    assert_close_to(path_relevance(explanation, paths).sum(1), crp_heatmaps(vgg16, castle, conditions))
    union = {}
    for p in paths:
        for n in p.nodes[1:]:
            union.setdefault(n.layer, set()).add(n.index)
    condition = [{"y": [target], **{layer: sorted(ids) for layer, ids in union.items()}}]
    assert_close_to(union_relevance(explanation, paths).sum(1), crp_heatmaps(vgg16, castle, condition))


def test_neuron_and_masked_heatmaps_equal_zennit_crp(vgg16, castle, explanation):
    target = int(explanation.targets[0])
    ours = neuron_relevance(explanation, "features.21", [3, 77, 500]).sum(1)
    conditions = [{"y": [target], "features.21": [c]} for c in (3, 77, 500)]
    assert_close_to(ours, crp_heatmaps(vgg16, castle, conditions))
    keep = list(range(0, 256, 3))
    ours = conditional_relevance(explanation, {"features.14": keep}).sum(1)
    assert_close_to(ours, crp_heatmaps(vgg16, castle, [{"y": [target], "features.14": keep}]))


def test_activation_maps_are_upsampled_and_scaled(explanation, graph):
    maps = activation_maps(explanation, [("features.28", 5), ("classifier.0", 1), ("features.0", 2)])
    assert maps.shape == (2, 224, 224) and float(maps.max()) <= 1.0 and float(maps.min()) >= 0.0
    heat = path_activation(explanation, k_best_paths(graph, 5))
    assert heat.shape == (224, 224) and 0 < float(heat.max()) <= 1.0


def test_unknown_layer_and_channel(explanation):
    with pytest.raises(TargetError, match="unknown layer 'features.99'"):
        neuron_graph(explanation, layers=["features.99", "features.28"])
    with pytest.raises(TargetError, match="channels 0–511"):
        neuron_relevance(explanation, "features.28", [512])
    with pytest.raises(TargetError, match="unknown layer"):
        get_optimizer(explanation, "nope")


def test_get_optimizer_by_hand():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False))
    model[1].weight.data = torch.eye(4, 3)
    model[3].weight.data = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    model.eval().requires_grad_(False)
    explanation = Explainer(model, Composite("z", lambda convs, linears: {n: Zero() for n in convs + linears})).explain(
        torch.tensor([[1.0, 2.0, 4.0]]))
    # A = (1, 2, 4, 0), R = A (LRP-0, identity weights): scores A/4 − R/4 = 0 everywhere
    selection = get_optimizer(explanation, "1", alpha=1.0)
    assert selection.scores.tolist() == [0.0, 0.0, 0.0, 0.0] and selection.std == 0.0
    assert selection.kept.tolist() == [False] * 4  # nothing is above μ − σ = 0
    explanation.relevances["1"] = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    selection = get_optimizer(explanation, "1", alpha=1.0)
    # scores = (1/4 − 1, 2/4, 1, 0) = (−0.75, 0.5, 1, 0); μ = 0.1875, σ = √(1.671875/4) = 0.646505
    assert selection.scores.tolist() == pytest.approx([-0.75, 0.5, 1.0, 0.0])
    assert selection.mean == pytest.approx(0.1875) and selection.std == pytest.approx(0.646505, rel=1e-5)
    assert selection.kept.tolist() == [False, True, True, True]
    assert get_optimizer(explanation, "1", alpha=0.0).kept.tolist() == [False, True, True, False]


def test_mse_and_smape_by_hand_including_zeros():
    estimate = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    reference = torch.tensor([[3.0, 0.0], [1.0, -2.0]])
    assert float(mse(estimate, reference)) == pytest.approx((4 + 0 + 1 + 0) / 4)
    # |1−3|/2 = 1, 0/0 → 0, |0−1|/0.5 = 2, 0/2 = 0 → mean 0.75
    assert float(smape(estimate, reference)) == pytest.approx(0.75)
    assert float(smape(torch.zeros(2, 2), torch.zeros(2, 2))) == 0.0


def test_threshold_sweep(explanation):
    sweep = threshold_sweep(explanation, "features.28", alphas=[-1.0, 0.0, 1.0, 100.0])
    assert sweep.kept_fraction == sorted(sweep.kept_fraction) and sweep.kept_fraction[-1] == 1.0
    assert sweep.mse[-1] == pytest.approx(0.0, abs=1e-12) and sweep.smape[-1] == pytest.approx(0.0, abs=1e-6)
    assert sweep.optimal_alpha in sweep.alphas
    eligible = [a for a, e in zip(sweep.alphas, sweep.mse) if e <= sum(sweep.mse) / len(sweep.mse)]
    fraction = dict(zip(sweep.alphas, sweep.kept_fraction))
    assert fraction[sweep.optimal_alpha] == min(fraction[a] for a in eligible)
    one = get_optimizer(explanation, "features.28", 1.0).kept.nonzero().flatten().tolist()
    torch.testing.assert_close(sweep.heatmaps[2], conditional_relevance(explanation, {"features.28": one})[0].sum(0))
    data = sweep.to_json()
    assert set(data) == {"layer", "alphas", "kept_fraction", "mse", "smape", "optimal"}
