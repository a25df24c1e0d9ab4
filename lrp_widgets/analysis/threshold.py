"""Algorithm 1 (GetOptimizer) and the threshold sweep with MSE and SMAPE (paper §IV, §IV.D).

Our reading of Algorithm 1: at a layer, the activation A (forward) and relevance R (backward) are
each scaled by their largest magnitude over the layer, their difference is summed over space to one
score per neuron, ``score_c = Σ_p (A_cp/max|A| − R_cp/max|R|)``, and the neurons with
``score > μ − α·σ`` are kept (α = 1 is the paper's "one standard deviation below the mean").

The sweep compares, for each α, the heatmap of the kept neurons only (relevance masked at the layer,
propagated to the input) with the full heatmap. Both are summed over colour and divided by the full
heatmap's max |value|; then over the P pixels

    MSE   = 1/P · Σ (h_α − h)²
    SMAPE = 1/P · Σ |h_α − h| / ((|h_α| + |h|) / 2),   a 0/0 term counting as 0  (range 0–2)

The optimal α keeps the fewest neurons among the α whose MSE is at or below the sweep's mean MSE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine.lrp import INPUT, Explanation
from ..errors import TargetError

DEFAULT_ALPHAS = tuple(round(-2.0 + 0.25 * i, 2) for i in range(20))  # −2 … 2.75


@dataclass
class Selection:
    """Algorithm 1 at one layer: per-neuron scores, μ, σ and the kept mask."""

    layer: str
    alpha: float
    scores: torch.Tensor
    mean: float
    std: float
    kept: torch.Tensor  # bool (C,)

    @property
    def threshold(self) -> float:
        return self.mean - self.alpha * self.std


def neuron_scores(explanation: Explanation, layer: str, image: int = 0) -> torch.Tensor:
    """``Σ_p (A/max|A| − R/max|R|)`` per neuron of ``layer``: shape (C,)."""
    if layer not in explanation.relevances or layer == INPUT:
        raise TargetError(f"unknown layer '{layer}': the layers are {', '.join(explanation.weighted)}")
    activation = explanation.maps(layer, relevance=False)[image].double()
    relevance = explanation.maps(layer)[image].double()
    difference = _scaled(activation) - _scaled(relevance)
    return difference.flatten(1).sum(1) if difference.dim() > 1 else difference


def _scaled(values: torch.Tensor) -> torch.Tensor:
    top = values.abs().max()
    return values / top if top > 0 else values


def get_optimizer(explanation: Explanation, layer: str, alpha: float = 1.0, image: int = 0) -> Selection:
    """Algorithm 1: keep the neurons whose score is above μ − α·σ."""
    scores = neuron_scores(explanation, layer, image)
    mean, std = float(scores.mean()), float(scores.std(unbiased=False))
    return Selection(layer, alpha, scores, mean, std, scores > mean - alpha * std)


def mse(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the last two dimensions."""
    return ((estimate - reference) ** 2).mean((-2, -1))


def smape(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Symmetric mean absolute percentage error over the last two dimensions, 0/0 ↦ 0 (range 0–2)."""
    numerator = (estimate - reference).abs()
    denominator = (estimate.abs() + reference.abs()) / 2
    terms = torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny), 0.0)
    return terms.mean((-2, -1))


@dataclass
class Sweep:
    """The threshold sweep at one layer."""

    layer: str
    alphas: list[float]
    kept_fraction: list[float]
    mse: list[float]
    smape: list[float]
    optimal_alpha: float
    heatmaps: torch.Tensor  # (len(alphas), H, W), the masked heatmaps summed over colour
    complete: bool = True  # False: the first α of a sweep still being computed (its optimum provisional)

    def to_json(self) -> dict:
        return {"layer": self.layer, "alphas": self.alphas, "kept_fraction": self.kept_fraction, "mse": self.mse,
                "smape": self.smape, "optimal": {"alpha": self.optimal_alpha, **self.at(self.optimal_alpha)}}

    def at(self, alpha: float) -> dict:
        """The sweep's values at the swept α nearest to ``alpha``."""
        i = min(range(len(self.alphas)), key=lambda j: abs(self.alphas[j] - alpha))
        return {"kept_fraction": self.kept_fraction[i], "mse": self.mse[i], "smape": self.smape[i]}


def masked_heatmaps(explanation: Explanation, layer: str, kept: torch.Tensor, image: int = 0,
                    chunk: int = 4) -> torch.Tensor:
    """Input relevance with the relevance at ``layer`` kept only where ``kept`` (B, C) is true:
    (B, C_in, H, W), in batches of ``chunk`` masks (bounding the memory a pass needs); identical masks
    are propagated once."""
    unique, inverse = torch.unique(kept, dim=0, return_inverse=True)
    relevance = explanation.relevances[layer][image:image + 1]
    masks = explanation.channel_mask(layer, unique.to(relevance.dtype))
    parts = [explanation.propagate(relevance.expand(len(part), *relevance.shape[1:]), layer, image=image,
                                   masks={layer: part}) for part in masks.split(chunk)]
    return torch.cat(parts)[inverse]


def threshold_sweep(explanation: Explanation, layer: str, alphas=DEFAULT_ALPHAS, image: int = 0,
                    selections: list[Selection] | None = None) -> Sweep:
    """MSE, SMAPE and kept fraction of the masked heatmap for each α, and the optimal α (``selections``:
    Algorithm 1 at each α when already computed)."""
    alphas = [float(a) for a in alphas]
    selections = selections or [get_optimizer(explanation, layer, alpha, image) for alpha in alphas]
    kept = torch.stack([s.kept for s in selections]).to(explanation.inputs.device)
    return sweep_of(explanation, layer, alphas, kept, masked_heatmaps(explanation, layer, kept, image).sum(1), image)


def sweep_of(explanation: Explanation, layer: str, alphas: list[float], kept: torch.Tensor, heatmaps: torch.Tensor,
             image: int = 0, complete: bool = True) -> Sweep:
    """The sweep's statistics from the kept masks (len(alphas), C) and their heatmaps (len(alphas), H, W)."""
    full = explanation.relevances[INPUT][image].sum(0)
    scale = full.abs().max().clamp_min(torch.finfo(full.dtype).tiny)
    errors = mse(heatmaps / scale, full / scale)
    smapes = smape(heatmaps / scale, full / scale)
    fractions = kept.double().mean(1)
    mean_error = errors.mean()
    eligible = [i for i in range(len(alphas)) if errors[i] <= mean_error]
    best = min(eligible, key=lambda i: (float(fractions[i]), float(errors[i])))
    return Sweep(layer, list(alphas), fractions.tolist(), errors.tolist(), smapes.tolist(), alphas[best], heatmaps,
                 complete)
