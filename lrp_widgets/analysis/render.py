"""Heatmaps as arrays and images: symmetric diverging colours (zero = white), overlays, PNG bytes.

>>> import numpy as np
>>> heatmap_rgb(np.array([[-1.0, 0.0, 1.0]]))[0, 1].tolist()
[255, 255, 255]
"""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import LinearSegmentedColormap
from PIL import Image

#: Blue (negative) – white (zero) – red (positive); an odd number of colours puts exact white at 0.
RELEVANCE_CMAP = LinearSegmentedColormap.from_list("relevance", ["#0000ff", "#ffffff", "#ff0000"], N=257)
ACTIVATION_CMAP = "inferno"


def to_map(relevance) -> np.ndarray:
    """(C, H, W) or (H, W) tensor/array → (H, W) float array summed over colour."""
    values = relevance.detach().cpu().numpy() if hasattr(relevance, "detach") else np.asarray(relevance)
    return values.sum(0) if values.ndim == 3 else values


def symmetric_scale(values: np.ndarray) -> np.ndarray:
    """Values scaled to [-1, 1] by their largest magnitude (zeros stay zero)."""
    top = float(np.abs(values).max(initial=0.0))
    return values / top if top > 0 else np.zeros_like(values)


def heatmap_rgb(relevance, cmap=RELEVANCE_CMAP) -> np.ndarray:
    """Relevance (summed over colour) in a symmetric diverging colormap, uint8 (H, W, 3)."""
    scaled = symmetric_scale(to_map(relevance))
    colours = cmap((scaled + 1) / 2)[..., :3]
    return np.rint(colours * 255).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """``image`` blended with ``heat`` by ``weight`` (scalar or (H, W) in [0, 1]), uint8."""
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim == 2:
        weight = weight[..., None]
    blended = image.astype(np.float64) * (1 - weight) + heat.astype(np.float64) * weight
    return np.rint(blended).clip(0, 255).astype(np.uint8)


def greyscale(image: np.ndarray, lighten: float = 0.35) -> np.ndarray:
    """The image in light grey (H, W, 3) uint8: a background on which red and blue relevance stand out
    whatever the photo's own colours (an orange sky, say)."""
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = grey * (1 - lighten) + 255 * lighten
    return np.repeat(np.rint(grey).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def relevance_overlay(image: np.ndarray, relevance, opacity: float = 0.8, cmap=RELEVANCE_CMAP) -> np.ndarray:
    """The heatmap over the image: opaque where relevance is large, the image shows through where it is ~0."""
    scaled = symmetric_scale(to_map(relevance))
    return overlay(image, heatmap_rgb(scaled, cmap), opacity * np.abs(scaled) ** 0.5)


def activation_overlay(image: np.ndarray, activation, opacity: float = 0.7, cmap: str = ACTIVATION_CMAP) -> np.ndarray:
    """An activation map in [0, 1] (H, W) over the image, opaque where it is high."""
    values = np.clip(to_map(activation), 0.0, 1.0)
    heat = np.rint(colormaps[cmap](values)[..., :3] * 255).astype(np.uint8)
    return overlay(image, heat, opacity * values)


def deconvolution_rgb(reconstruction, percentile: float = 99.5) -> np.ndarray:
    """A deconvnet reconstruction (3, H, W) as uint8 (H, W, 3): zero is mid-grey, ± the ``percentile`` of
    |values| are black / white per colour (all zero: plain grey)."""
    values = reconstruction.detach().cpu().double().numpy() if hasattr(reconstruction, "detach") else \
        np.asarray(reconstruction, dtype=np.float64)
    values = values.transpose(1, 2, 0)
    scale = float(np.percentile(np.abs(values), percentile))
    scaled = 0.5 + values / (2 * scale) if scale > 0 else np.full_like(values, 0.5)
    return np.rint(scaled.clip(0, 1) * 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 (H, W[, 3|4]) → PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def input_picture(inputs: torch.Tensor) -> np.ndarray:
    """A model input (C, H, W) as the picture its heatmaps are drawn over, uint8 (H, W, 3): each channel
    stretched to 0–255 (a user's normalisation is not known), one channel shown in grey."""
    low, high = inputs.amin((1, 2), keepdim=True), inputs.amax((1, 2), keepdim=True)
    scaled = (inputs - low) / (high - low).clamp_min(1e-12)
    if scaled.shape[0] != 3:
        scaled = scaled.mean(0, keepdim=True).expand(3, -1, -1)
    return (scaled * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
