"""Issue 4: Python-side latency of the linked views and the memory of one Explorer.

α change: from setting ``state.alpha`` until every view holds its new data (the session runs inline).
Class change: until the new relevance heatmap is shown (the bundle is published first), and until
every view is updated (graph, paths, sweep included). RSS of the process with one Explorer and VGG16
(importing torch's CUDA build alone takes ~690 MB here).
"""
from __future__ import annotations

import os
import time

import torch

from lrp_widgets.views import Explorer

from .common import Row, compare, median_time, rss_mb
from .models import IMAGES


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
    shown, total, seen = [], [], []
    explorer.relevance.figure.mark.observe(lambda change: seen.append(time.perf_counter()), "image")
    for _ in range(min(repeat, 4)):
        seen.clear()
        explorer.session.bundles.clear()  # a class never seen before
        start = time.perf_counter()
        state.target = next(classes)["index"]
        total.append(time.perf_counter() - start)
        shown.append(seen[0] - start)
    rows.append(Row("views", "class change → relevance shown", sorted(shown)[len(shown) // 2], len(shown)))
    rows.append(Row("views", "class change → every view", sorted(total)[len(total) // 2], len(total)))
    compare(rows, "class change → relevance shown", "explanation", "≤ 1.2×")
    compare(rows, "class change → every view", "explanation", "≤ 4×")
    rows.append(Row("views", "RSS of one Explorer, first image (MB)", 0.0, 1, memory, target="≤ 1500 MB"))
    rows.append(Row("views", "RSS after the class changes (MB)", 0.0, 1, rss_mb()))
    for row in rows:
        print(f"{row.case:32s} {row.median_s * 1000:8.1f} ms  {row.peak_mb or ''}", flush=True)
    return rows
