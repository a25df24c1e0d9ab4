"""Issue 4: Python-side latency of the linked views and the memory of one Explorer.

α change: from setting ``state.alpha`` until every view holds its new data (the session runs inline).
Class change: until the new relevance heatmap is shown (the bundle is published first), every view but the
sweep, the sweep's first points, and every view (the whole sweep). A neuron clicked while a class's sweep runs
(the worker computes, as in the app): until its deconvolution is published. RSS of the process with one Explorer and VGG16
(importing torch's CUDA build alone takes ~690 MB here).
"""
from __future__ import annotations

import os
import time

import torch

from lrp_widgets.views import Explorer

from .common import Row, compare, median_time, rss_mb
from .models import IMAGES


#: after a class change, until the views show: the relevance heatmap, every view but the sweep, the sweep's first
#: points, everything
CLASS_CHANGE = {
    "class change → relevance shown": lambda result: True,
    "class change → every view but the sweep": lambda result: result.paths is not None,
    "class change → sweep's first points": lambda result: result.sweep is not None,
    "class change → every view": lambda result: result.complete,
}
CLASS_CHANGE_TARGETS = {"class change → relevance shown": "≤ 1.2×", "class change → every view but the sweep": "≤ 2×",
                        "class change → sweep's first points": "≤ 3×"}


def neuron_during_sweep(repeat: int) -> list[float]:
    """Seconds from a neuron click, made while a new class's sweep is being computed (by the session's worker, as
    in the app), until the neuron's deconvolution is published."""
    explorer = Explorer(weights="random", image="castle")
    state, session = explorer.state, explorer.session
    session.wait()
    classes, graph = [p["index"] for p in state.bundle.predictions[1:]], state.result.graph
    layer = graph.layers[-2]
    times = []
    for target, node in zip(classes[:repeat], graph.nodes[layer]):
        state.selected, state.target = (), target
        while state.result.target != target or state.result.sweep is None:  # the sweep's first points are shown
            session._drain()
            time.sleep(0.002)
        if state.result.sweep.complete:
            continue  # the sweep ended before the click: no sample
        start = time.perf_counter()
        state.selected = (layer, node.index)
        while state.result.neuron is None:
            session._drain()
            time.sleep(0.002)
        times.append(time.perf_counter() - start)
        session.wait()
    return times


def run(repeat: int = 5, threads: int = 2, device: str = "cpu") -> list[Row]:
    torch.set_num_threads(threads)
    os.environ.setdefault("LRP_WIDGETS_IMAGES", str(IMAGES))
    explorer = Explorer(weights="random", image="castle", background=False)
    state = explorer.state
    memory = rss_mb()  # the first explanation, its graph, paths and sweep included
    rows = [Row("views", "explanation", median_time(lambda: state.bundle.explain(
        state.bundle.model, state.bundle.image, None), repeat), repeat)]
    alphas = iter([a / 4 for a in range(-8, 12)] * 10)
    rows.append(Row("views", "α change → all views", median_time(lambda: setattr(state, "alpha", next(alphas)),
                                                                   max(repeat, 15)), max(repeat, 15), target="≤ 50 ms"))
    classes = iter(explorer.state.bundle.predictions[1:] * 3)
    times: dict[str, list[float]] = {case: [] for case in CLASS_CHANGE}
    published: list[tuple[float, object]] = []
    state.observe(lambda change: published.append((time.perf_counter(), change["new"])), "result")
    for _ in range(min(repeat, 4)):
        published.clear()
        explorer.session.bundles.clear()  # a class never seen before
        start = time.perf_counter()
        state.target = next(classes)["index"]
        for case, shows in CLASS_CHANGE.items():
            times[case].append(next(t for t, result in published if shows(result)) - start)
    for case, values in times.items():
        rows.append(Row("views", case, sorted(values)[len(values) // 2], len(values)))
        compare(rows, case, "explanation", CLASS_CHANGE_TARGETS.get(case, ""))
    rows.append(Row("views", "RSS of one Explorer, first image (MB)", 0.0, 1, memory, target="≤ 1500 MB"))
    rows.append(Row("views", "RSS after the class changes (MB)", 0.0, 1, rss_mb()))
    neuron = neuron_during_sweep(4)
    rows.append(Row("views", "neuron click during the sweep → deconvolution", sorted(neuron)[len(neuron) // 2],
                    len(neuron)))
    compare(rows, "neuron click during the sweep → deconvolution", "explanation", "≤ 0.3×")
    for row in rows:
        print(f"{row.case:32s} {row.median_s * 1000:8.1f} ms  {row.peak_mb or ''}", flush=True)
    return rows
