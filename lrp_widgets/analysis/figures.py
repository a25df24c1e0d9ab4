"""Static matplotlib figures (CLI output, case-study notebook)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..engine.lrp import INPUT, Explanation  # noqa: E402
from ..engine.models import LoadedModel  # noqa: E402
from .render import RELEVANCE_CMAP, deconvolution_rgb, relevance_overlay, symmetric_scale, to_map  # noqa: E402


def model_label(model: LoadedModel) -> str:
    return f"{model.name}, {'pretrained' if model.pretrained else 'RANDOM (untrained) weights'}"


def save_heatmap_figure(image: np.ndarray, explanation: Explanation, model: LoadedModel, path: Path,
                        index: int = 0) -> None:
    """The image, the input relevance (symmetric colormap, zero = white) and the two overlaid."""
    target = int(explanation.targets[index])
    relevance = to_map(explanation.relevances[INPUT][index])
    figure, axes = plt.subplots(1, 3, figsize=(11, 4))
    axes[0].imshow(image)
    axes[0].set_title("image")
    shown = axes[1].imshow(symmetric_scale(relevance), cmap=RELEVANCE_CMAP, vmin=-1, vmax=1)
    axes[1].set_title(f"relevance for '{model.category(target)}' ({target})")
    figure.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(relevance_overlay(image, relevance))
    axes[2].set_title("overlay")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(model_label(model))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_overlay(image: np.ndarray, overlay_rgb: np.ndarray, title: str, path: Path) -> None:
    """One overlay image with a title."""
    figure, axis = plt.subplots(figsize=(4.5, 4.8))
    axis.imshow(overlay_rgb)
    axis.set_title(title, fontsize=10)
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_threshold_figure(sweep, path: Path) -> None:
    """MSE, SMAPE and the kept fraction over α, the optimal α marked."""
    figure, left = plt.subplots(figsize=(6, 4))
    left.plot(sweep.alphas, sweep.mse, "o-", label="MSE", color="tab:red")
    left.set_xlabel("α (keep neurons with score > μ − α·σ)")
    left.set_ylabel("MSE")
    right = left.twinx()
    right.plot(sweep.alphas, sweep.smape, "s--", label="SMAPE", color="tab:blue")
    right.plot(sweep.alphas, sweep.kept_fraction, ":", label="kept fraction", color="gray")
    right.set_ylabel("SMAPE / kept fraction")
    left.axvline(sweep.optimal_alpha, color="black", linewidth=1)
    left.set_title(f"threshold sweep at {sweep.layer}: optimal α = {sweep.optimal_alpha:g}")
    figure.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- case-study figures (notebooks/case_study.ipynb): build a figure, then save it with save_png ---

#: Colours of the neuron-graph drawing.
PATH_RED = "#d62728"
NODE_GRAY = "#7f7f7f"
NEGATIVE_BLUE = "#1f77b4"


def save_png(figure, path: Path, dpi: int = 80) -> Path:
    """Save ``figure`` as a full-colour PNG (no palette: heatmaps keep their smooth colours) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, pil_kwargs={"optimize": True})
    plt.close(figure)
    return path


def figure_png(figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (then closed): for ``IPython.display.Image(data=...)`` whatever the backend."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def weights_banner(model: LoadedModel) -> str:
    """An HTML warning banner when ``model`` is not pretrained, else ``""``."""
    if model.pretrained:
        return ""
    return ('<div style="background:#fff3cd;border:2px solid #d39e00;border-radius:4px;padding:8px 12px;'
            f'color:#5c4300"><b>⚠ {model.name} runs on RANDOM (untrained) weights</b>, not the ImageNet ones '
            '(<code>weights="auto"</code> falls back to them when those cannot be downloaded): the explanations '
            'show how LRP works, not what a trained network sees. Every figure title says which weights made '
            'it.</div>')


def draw_neuron_graph(graph, paths=(), ax=None, title: str | None = None, labels: bool = True):
    """The neuron graph: layers as columns (input side left, class right), each layer's kept nodes
    top-down by relevance, node area ∝ |relevance| (scaled per layer), edge width ∝ |flow| (scaled per
    layer pair; negative flows blue). The first path (the longest) is drawn in red, the other k−1 in
    light red."""
    from matplotlib.collections import LineCollection

    ax = ax if ax is not None else plt.subplots(figsize=(12, 4.5))[1]
    position = {}
    for x, layer in enumerate(graph.layers):
        nodes = graph.nodes[layer]
        for rank, node in enumerate(nodes):
            position[node.id] = (x, (len(nodes) - 1) / 2 - rank)
    on_path = [path.edges for path in paths]
    best, others = (on_path[0], set().union(*on_path[1:])) if on_path else (set(), set())
    plain, colours, widths, red, light = [], [], [], [], []
    for upper, lower in zip(graph.layers[:0:-1], graph.layers[-2::-1]):
        matrix = graph.flows[upper, lower]
        top = float(matrix.abs().max()) or 1.0
        for i, u in enumerate(graph.nodes[upper]):
            for j, v in enumerate(graph.nodes[lower]):
                segment = (position[u.id], position[v.id])
                if (u.id, v.id) in best:
                    red.append(segment)
                elif (u.id, v.id) in others:
                    light.append(segment)
                else:
                    flow = float(matrix[i, j])
                    plain.append(segment)
                    colours.append(NODE_GRAY if flow >= 0 else NEGATIVE_BLUE)
                    widths.append(0.1 + 2.0 * abs(flow) / top)
    ax.add_collection(LineCollection(plain, colors=colours, linewidths=widths, alpha=0.35, zorder=1))
    ax.add_collection(LineCollection(light, colors="#f4a6a6", linewidths=2.0, zorder=2))
    ax.add_collection(LineCollection(red, colors=PATH_RED, linewidths=3.0, zorder=3))
    best_nodes = {node.id for node in paths[0].nodes} if paths else set()
    for layer in graph.layers:
        nodes = graph.nodes[layer]
        top = max(abs(n.relevance) for n in nodes) or 1.0
        xs, ys = zip(*(position[n.id] for n in nodes))
        ax.scatter(xs, ys, s=[15 + 220 * abs(n.relevance) / top for n in nodes], zorder=4,
                   c=[PATH_RED if n.id in best_nodes else (NODE_GRAY if n.relevance >= 0 else NEGATIVE_BLUE)
                      for n in nodes], edgecolors="white", linewidths=0.5)
        if labels:
            for n in nodes:
                x, y = position[n.id]
                ax.annotate(str(n.index), (x, y), xytext=(0, 5), textcoords="offset points", ha="center",
                            fontsize=5, color="black", zorder=5)
    ax.set_xticks(range(len(graph.layers)), graph.layers, rotation=90, fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(graph.layers) - 0.5)
    ax.autoscale_view(scalex=False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def prediction_bars(predictions: list[dict], ax=None, highlight: int | None = None):
    """Top-k predictions as horizontal bars (softmax probability), the most probable on top."""
    ax = ax if ax is not None else plt.subplots(figsize=(4, 3))[1]
    names = [f"{p['name']} ({p['index']})" for p in predictions][::-1]
    values = [p["probability"] for p in predictions][::-1]
    colours = [PATH_RED if p["index"] == highlight else NODE_GRAY for p in predictions][::-1]
    ax.barh(range(len(values)), values, color=colours)
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.set_xlabel("probability", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def block_ends(explanation: Explanation) -> list[str]:
    """The last Conv2d before each max-pool (VGG16: features.2, 7, 14, 21, 28)."""
    from torch import nn

    ends, last = [], None
    for step in explanation.network.steps:
        if isinstance(step.module, nn.Conv2d):
            last = step.name
        elif isinstance(step.module, nn.MaxPool2d) and last is not None:
            ends.append(last)
            last = None
    return ends


def back_predictions(explanation: Explanation, path, layers: list[str] | None = None,
                     mode: str = "map") -> list[tuple[str, np.ndarray]]:
    """Deconvnet reconstructions of the path's neurons at ``layers`` (default: :func:`block_ends`),
    lowest layer first, as (label ``layer:channel``, uint8 image)."""
    from ..engine.deconv import deconvolve

    layers = layers if layers is not None else block_ends(explanation)
    nodes = [node for node in reversed(path.nodes) if node.layer in layers]
    return [(node.id, deconvolution_rgb(deconvolve(explanation, node.layer, [node.index], mode=mode)[0]))
            for node in nodes]


def case_study_figure(picture: np.ndarray, predictions: list[dict], graph, paths, backs, title: str,
                      target: int | None = None):
    """Fig. 5 for one image: (A) the image, (B) the top predictions, (C) the neuron graph with the
    k best paths, (D) the back-predictions of the longest path's neurons."""
    figure = plt.figure(figsize=(17, 5), layout="constrained")
    a, b, c, d = figure.subfigures(1, 4, width_ratios=[1, 1.1, 3.6, 1.3])
    axis = a.subplots()
    axis.imshow(picture)
    axis.axis("off")
    a.suptitle("A  image", fontsize=10)
    prediction_bars(predictions, b.subplots(), highlight=target)
    b.suptitle("B  top-5 predictions", fontsize=10)
    draw_neuron_graph(graph, paths, c.subplots())
    c.suptitle(f"C  neuron graph: longest path (red) and k = {len(paths)} best paths", fontsize=10)
    rows = max(1, -(-len(backs) // 2))
    for axis in np.atleast_1d(d.subplots(rows, 2)).ravel():
        axis.axis("off")
    for axis, (label, rgb) in zip(np.atleast_1d(d.axes).ravel(), backs):
        axis.imshow(rgb)
        axis.set_title(label, fontsize=7)
    d.suptitle("D  back-predictions (deconvnet)", fontsize=10)
    figure.suptitle(title, fontsize=11)
    return figure


def overlay_row(picture: np.ndarray, panels: list[tuple[str, np.ndarray]], title: str):
    """The image, then one titled overlay per panel, in a row (Figs. 6 and 7)."""
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(2.4 * (len(panels) + 1), 2.9), layout="constrained")
    for axis, (label, rgb) in zip(axes, [("image", picture), *panels]):
        axis.imshow(rgb)
        axis.set_title(label, fontsize=8)
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure
