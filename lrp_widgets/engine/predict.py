"""One image through a loaded model: its explanation, top predictions and a JSON summary.

>>> from PIL import Image
>>> model = load_model("vgg11", "random")  # doctest: +SKIP
>>> explanation = explain_image(model, Image.new("RGB", (224, 224)))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Mapping

import torch
from PIL import Image

from .composites import get_composite
from .lrp import INPUT, Explainer, Explanation
from .models import LoadedModel
from .rules import Rule


def explainer_for(model: LoadedModel, preset: str = "paper", maxpool: str = "winner",
                  overrides: Mapping[str, Rule] | None = None) -> Explainer:
    """The model's explainer for these rules, traced once and kept with the model."""
    key = (preset, maxpool, tuple(sorted((name, repr(rule)) for name, rule in (overrides or {}).items())))
    if key not in model.explainers:
        model.explainers[key] = Explainer(model, get_composite(preset, overrides, maxpool))
    return model.explainers[key]


def explain_image(model: LoadedModel, image: Image.Image, target: int | None = None, preset: str = "paper",
                  maxpool: str = "winner", overrides: Mapping[str, Rule] | None = None) -> Explanation:
    """Explain one PIL image (preprocessed like the weights) for ``target`` (default: the top-1 class)."""
    explainer = explainer_for(model, preset, maxpool, overrides)
    return explainer.explain(model.preprocess(image)[None], target)


def top_predictions(explanation: Explanation, model: LoadedModel, k: int = 5, image: int = 0) -> list[dict]:
    """The k most probable classes: index, name and softmax probability."""
    probabilities = torch.softmax(explanation.logits[image].double(), 0)
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [{"index": int(i), "name": model.category(int(i)), "probability": float(p)}
            for p, i in zip(values, indices)]


def summary(explanation: Explanation, model: LoadedModel, image: int = 0) -> dict:
    """What ``summary.json`` holds: predictions, the explained class, and the conservation table."""
    target = int(explanation.targets[image])
    sums = explanation.relevance_sums()
    return {
        "model": model.name,
        "weights": model.weights,
        "pretrained": model.pretrained,
        "top5": top_predictions(explanation, model, 5, image),
        "explained_class": {"index": target, "name": model.category(target),
                            "logit": float(explanation.output_relevance[image])},
        "input_relevance_sum": float(sums[INPUT][image]),
        "layer_relevance_sums": {name: float(values[image]) for name, values in sums.items() if name != INPUT},
    }
