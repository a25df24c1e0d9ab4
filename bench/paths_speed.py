"""Issue 3: k = 5 path heatmaps and the 20-α sweep against zennit-crp computing the same conditional
heatmaps, and the top-8 graph over all 16 layers against one full explanation.

zennit-crp runs ``CondAttribution`` with the same composite (``tests.peers.zennit_composite``) and the same
channel conditions, all conditions in one call (it batches them itself).
"""
from __future__ import annotations

import torch

from lrp_widgets.analysis.graph import neuron_graph
from lrp_widgets.analysis.heatmaps import path_relevance
from lrp_widgets.analysis.paths import k_best_paths
from lrp_widgets.analysis.threshold import DEFAULT_ALPHAS, get_optimizer, threshold_sweep
from lrp_widgets.engine import Explainer
from tests.peers import peer_copy, zennit_composite

from .common import Row, compare, median_time
from .models import batch, vgg16

SWEEP_LAYER = "features.28"


def crp(model, x):
    from crp.attribution import CondAttribution

    model = peer_copy(model)
    attribution, composite = CondAttribution(model), zennit_composite(model, "paper")

    def run(conditions):
        return attribution(x.clone().requires_grad_(), conditions, composite).heatmap
    return run


def run(repeat: int = 5, threads: int = 2, device: str = "cpu") -> list[Row]:
    torch.set_num_threads(threads)
    model, x = vgg16(device), batch(1, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    explainer = Explainer(model)
    explanation = explainer.explain(x)
    graph = neuron_graph(explanation, 8)
    paths = k_best_paths(graph, 5)
    target = int(explanation.targets[0])
    path_conditions = [{"y": [target], **{n.layer: [n.index] for n in p.nodes[1:]}} for p in paths]
    sweep_conditions = []
    for alpha in DEFAULT_ALPHAS:
        kept = get_optimizer(explanation, SWEEP_LAYER, alpha).kept.nonzero().flatten().tolist()
        sweep_conditions.append({"y": [target], SWEEP_LAYER: kept})
    peer = crp(model, x)
    cases = {
        "explanation": lambda: explainer.explain(x),
        "graph top-8, 16 layers": lambda: neuron_graph(explanation, 8),
        "ours k=5 path heatmaps": lambda: path_relevance(explanation, paths),
        "zennit-crp 5 conditions": lambda: peer(path_conditions),
        "ours sweep 20 α": lambda: threshold_sweep(explanation, SWEEP_LAYER),
        "zennit-crp 20 masked": lambda: peer(sweep_conditions),
    }
    rows = []
    for case, fn in cases.items():
        seconds = median_time(fn, repeat, sync=sync)
        rows.append(Row("paths b1", case, seconds, repeat))
        print(f"{'paths b1':10s} {case:26s} {seconds * 1000:8.1f} ms", flush=True)
    compare(rows, "graph top-8, 16 layers", "explanation", "≤ 2×")
    compare(rows, "ours k=5 path heatmaps", "zennit-crp 5 conditions", "≤ 0.5×")
    compare(rows, "ours sweep 20 α", "zennit-crp 20 masked", "≤ 0.5×")
    return rows



