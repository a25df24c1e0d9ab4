"""Static matplotlib figures (CLI output, case-study notebook)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..engine.lrp import INPUT, Explanation  # noqa: E402
from ..engine.models import LoadedModel  # noqa: E402
from .render import RELEVANCE_CMAP, relevance_overlay, symmetric_scale, to_map  # noqa: E402


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
