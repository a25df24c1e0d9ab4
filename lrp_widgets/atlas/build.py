"""Building an atlas: the folder split into shards of images, each shard explained batch by batch (images decoded
in DataLoader workers) into a :class:`~lrp_widgets.atlas.statistics.Partial`, saved, and the partials merged
in shard order into the atlas's files. A run that stops resumes from the shards it saved.

Memory is bounded whatever the folder's size: one batch of explanations at a time, and per shard only the
top-K table and the class sums.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.graph import neuron_graph
from ..engine.families import graph_blocks, graph_layers
from ..engine.models import LoadedModel
from ..engine.lrp import channel_totals
from ..engine.network import INPUT, Network
from ..engine.predict import explainer_for
from ..errors import ModelError, TargetError
from .folder import ImageFolder, Item, collate, list_images
from .statistics import ClassSums, Partial, batch_top, channel_statistics

SHARDS = ".shards"
TARGETS = ("label", "predicted")


@dataclass(frozen=True)
class Plan:
    """Everything that decides an atlas's numbers (a resumed run must have the same plan)."""

    folder: str
    items: tuple[Item, ...]
    model: str
    weights: str
    preset: str
    #: the layers as given (or the graph's names) → the engine's step names
    layers: dict[str, str]
    output: str
    k: int = 40
    target: str = "label"
    top_n: int = 8
    shard_size: int = 128

    def shards(self) -> list[range]:
        return [range(start, min(start + self.shard_size, len(self.items)))
                for start in range(0, len(self.items), self.shard_size)]

    @property
    def fingerprint(self) -> str:
        fields = asdict(self)
        fields["items"] = hashlib.sha256(json.dumps(fields["items"]).encode()).hexdigest()
        return json.dumps(fields, sort_keys=True)


def make_plan(folder: str | Path, model: LoadedModel, layers: Sequence[str] | None = None, k: int = 40,
              target: str = "label", preset: str = "paper", top_n: int = 8, shard_size: int = 128) -> Plan:
    """Check every argument and list the folder: one line on what is wrong, before any work."""
    if k < 1:
        raise TargetError(f"--top K must be at least 1, not {k}")
    if top_n < 1 or shard_size < 1:
        raise TargetError("the graph's nodes per layer and the shard size must be at least 1")
    if target not in TARGETS:
        raise TargetError(f"--target '{target}': choose label (the folder's class) or predicted")
    network = explainer_for(model, preset).network
    output = network.by_name[network.output].module
    items = list_images(folder, model.categories, output.out_features if isinstance(output, nn.Linear) else None)
    if layers:
        steps = {}
        for name in layers:
            try:
                steps[name] = network.resolve(name)
            except ModelError as error:
                raise TargetError(str(error)) from None
            if steps[name] not in network.relevant or steps[name] == network.output:
                raise TargetError(f"layer '{name}' carries no relevance a class hands down: choose one of "
                                  f"{', '.join(_default_layers(network))}")
    else:
        steps = _default_layers(network)
    return Plan(str(Path(folder).resolve()), tuple(items), model.name, model.weights, preset, steps, network.output,
                k, target, top_n, shard_size)


def _default_layers(network) -> dict[str, str]:
    """The neuron graph's layers but the output, by module name (a block's name for its output)."""
    names = {network.blocks[path]: path for path in graph_blocks(network)}
    return {names.get(step, step): step for step in graph_layers(network) if step != network.output}


class ShardWorker:
    """Explains batches of one plan into partials; it holds the model (a Ray actor holds one of these)."""

    def __init__(self, plan: Plan, model: LoadedModel):
        self.plan, self.model = plan, model
        self.explainer = explainer_for(model, plan.preset)
        self.names = {step: label for label, step in plan.layers.items()} | {plan.output: plan.output}
        self.stop = backward_stop(self.explainer.network, plan.layers.values())
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def add_batch(self, partial: Partial, samples: list) -> None:
        """Explain one batch of ``(image number, tensor or None, reason)`` into ``partial``."""
        plan = self.plan
        if self.identity not in partial.explained_by:
            partial.explained_by.append(self.identity)
        partial.skipped += [(plan.items[number].path, reason) for number, tensor, reason in samples if tensor is None]
        samples = [(number, tensor) for number, tensor, _ in samples if tensor is not None]
        if not samples:
            return
        numbers = np.array([number for number, _ in samples])
        labels = [plan.items[number].label for number in numbers]
        x = torch.stack([tensor for _, tensor in samples]).to(self.explainer.device)
        explanation = self.explainer.explain(x, labels if plan.target == "label" else None, self.stop)
        targets = explanation.targets.tolist()
        for label, step in plan.layers.items():
            for what in ("relevance", "activation"):
                maps = explanation.maps(step, relevance=what == "relevance")  # channels first (tokens: (N, D, T))
                values, positions = channel_statistics(maps)
                width = maps.shape[-1] if maps.dim() > 2 else 1  # tokens: y = 0, x = the token
                if maps.dim() == 4:
                    partial.shapes[label] = tuple(maps.shape[2:])
                for kind, value in values.items():
                    partial.add_top(label, f"{what}_{kind}", batch_top(value, positions, numbers, width, plan.k), plan.k)
            relevance = channel_totals(explanation.relevances[step]).double().cpu().numpy()
            for row, target in enumerate(targets):
                sums = ClassSums(1, {label: relevance[row]}, {label: relevance[row] ** 2})
                partial.classes.setdefault(target, ClassSums()).add(sums)
        layers = [*plan.layers.values(), plan.output]
        for row, (number, target) in enumerate(zip(numbers, targets)):
            partial.add_graph(target, neuron_graph(explanation, plan.top_n, layers, image=row), self.names)
            partial.images.append({"image": plan.items[number].path, "label": plan.items[number].label,
                                   "predicted": int(explanation.logits[row].argmax()), "target": target,
                                   "logit": float(explanation.logits[row, target])})

    def shard(self, shard: range, workers: int = 0, batch_size: int = 8) -> Partial:
        """One shard, its images read by ``workers`` processes."""
        partial = Partial()
        for batch in batches(self.plan, self.model, [shard], workers, batch_size):
            self.add_batch(partial, batch)
        return partial


def backward_stop(network: Network, layers: Iterable[str]) -> str:
    """Where the backward pass can end: the last step all relevance passes at or before the lowest layer."""
    lowest = min(network.order[step] for step in layers)
    return max((cut for cut in network.cuts if network.order[cut] <= lowest), key=network.order.__getitem__,
               default=INPUT)


def batches(plan: Plan, model: LoadedModel, shards: Sequence[range], workers: int, batch_size: int) -> Iterable[list]:
    """Batches of decoded images, none across two shards, in order."""
    dataset = ImageFolder(plan.folder, plan.items, model.preprocess)
    sampler = [list(shard[i:i + batch_size]) for shard in shards for i in range(0, len(shard), batch_size)]
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate)


@dataclass
class Checkpoints:
    """The shards a run has finished, in ``DIR/.shards``: one pickle each, and the plan they belong to."""

    folder: Path
    plan: Plan
    done: dict[int, Path] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path, plan: Plan, resume: bool) -> "Checkpoints":
        folder = out / SHARDS
        marker = folder / "plan.json"
        if resume and marker.exists() and marker.read_text() != plan.fingerprint:
            raise TargetError(f"--resume: the run in '{out}' was for another folder, model, layers or options; "
                              "start it anew without --resume")
        if not resume and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(plan.fingerprint)
        done = {int(path.stem.split("-")[1]): path for path in sorted(folder.glob("shard-*.pkl"))}
        return cls(folder, plan, done)

    def save(self, index: int, partial: Partial) -> None:
        path = self.folder / f"shard-{index:05d}.pkl"
        scratch = path.with_suffix(".tmp")
        scratch.write_bytes(pickle.dumps(partial))
        scratch.replace(path)  # a shard is there whole or not at all
        self.done[index] = path

    def load(self, index: int) -> Partial:
        return pickle.loads(self.done[index].read_bytes())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_local(plan: Plan, model: LoadedModel, checkpoints: Checkpoints, workers: int, batch_size: int,
              progress: Callable[[int], None]) -> None:
    """Explain the shards not yet done, saving each as it finishes."""
    worker = ShardWorker(plan, model)
    shards = plan.shards()
    pending = [index for index in range(len(shards)) if index not in checkpoints.done]
    left = {index: len(shards[index]) for index in pending}
    partials = {index: Partial() for index in pending}
    for batch in batches(plan, model, [shards[index] for index in pending], workers, batch_size):
        index = batch[0][0] // plan.shard_size
        worker.add_batch(partials[index], batch)
        left[index] -= len(batch)
        progress(len(batch))
        if not left[index]:
            checkpoints.save(index, partials.pop(index))
