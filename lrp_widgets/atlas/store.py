"""An atlas on disk: Parquet tables anyone can open with pandas or DuckDB, and :class:`Atlas` to query them.

``DIR/references.parquet``  layer, channel, statistic, rank (0 = highest), image (relative to the folder),
                            value, y, x (the map's maximum)
``DIR/images.parquet``      image, label, predicted, target (the class explained), logit (the target's)
``DIR/classes.parquet``     class, layer, channel, relevance_mean, relevance_std (over the class's images), count
``DIR/class_edges.parquet`` class, upper, upper_channel, lower, lower_channel, flow (mean over the class's
                            images, 0 where an image's graph lacks the edge), images (how many graphs have it)
``DIR/skipped.csv``         file, reason
``DIR/atlas.json``          model, weights, preset, layers, K, versions …
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..analysis.graph import NeuronGraph, Node
from ..errors import TargetError
from .statistics import STATISTICS, Partial

TABLES = ("references", "images", "classes", "class_edges")


def write(out: Path, partial: Partial, info: dict, paths: list[str]) -> None:
    """The merged partial as the atlas's files in ``out`` (each written whole, then moved in place); ``paths``:
    the folder's images by number."""
    layers = list(info["layers"])
    references = {name: [] for name in ("layer", "channel", "statistic", "rank", "image", "value", "y", "x")}
    for layer in layers:
        for statistic in STATISTICS:
            top = partial.top[layer, statistic]
            k, channels = top.values.shape
            references["layer"] += [layer] * (k * channels)
            references["statistic"] += [statistic] * (k * channels)
            references["channel"].append(np.tile(np.arange(channels), k))
            references["rank"].append(np.repeat(np.arange(k), channels))
            references["image"] += [paths[i] for i in top.images.ravel()]
            references["value"].append(top.values.ravel())
            references["y"].append(top.y.ravel())
            references["x"].append(top.x.ravel())
    tables = {"references": _joined(references)}
    tables["images"] = {name: [row[name] for row in partial.images]
                        for name in ("image", "label", "predicted", "target", "logit")}
    classes = {name: [] for name in ("class", "layer", "channel", "relevance_mean", "relevance_std", "count")}
    for label in sorted(partial.classes):
        sums = partial.classes[label]
        for layer in layers:
            mean = sums.sums[layer] / sums.count
            std = np.sqrt(np.maximum(sums.squares[layer] / sums.count - mean ** 2, 0))
            classes["class"] += [label] * len(mean)
            classes["layer"] += [layer] * len(mean)
            classes["channel"].append(np.arange(len(mean)))
            classes["relevance_mean"].append(mean)
            classes["relevance_std"].append(std)
            classes["count"] += [sums.count] * len(mean)
    tables["classes"] = _joined(classes)
    edges = sorted(partial.edges.items())
    tables["class_edges"] = {
        "class": [key[0] for key, _ in edges], "upper": [key[1] for key, _ in edges],
        "upper_channel": [key[2] for key, _ in edges], "lower": [key[3] for key, _ in edges],
        "lower_channel": [key[4] for key, _ in edges],
        "flow": [total / partial.classes[key[0]].count for key, (total, _) in edges],
        "images": [count for _, (_, count) in edges]}
    for name, columns in tables.items():
        _replace(out / f"{name}.parquet", lambda path, columns=columns: pq.write_table(pa.table(columns), path))

    def skipped(path: Path) -> None:
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(("file", "reason"))
            writer.writerows(sorted(partial.skipped))

    _replace(out / "skipped.csv", skipped)
    _replace(out / "atlas.json", lambda path: path.write_text(json.dumps(info, indent=1)))


def _joined(columns: dict[str, list]) -> dict:
    """Columns gathered as lists of arrays, or of values, as one array or list each."""
    return {name: np.concatenate(parts) if parts and isinstance(parts[0], np.ndarray) else parts
            for name, parts in columns.items()}


def _replace(path: Path, write_to) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    write_to(scratch)
    scratch.replace(path)


@dataclass(frozen=True)
class Comparison:
    """Two classes' graphs side by side: per layer the channels both rely on and those only one does, and the
    channels that separate them most (difference of mean relevance, each class's normalised by its layer's
    Σ|mean|)."""

    classes: tuple[int, int]
    shared: dict[str, list[int]]
    only: tuple[dict[str, list[int]], dict[str, list[int]]]
    separating: dict[str, list[tuple[int, float]]]


class Atlas:
    """An atlas built by :func:`~lrp_widgets.atlas.build_atlas` (or ``lrp-widgets atlas``), read from ``DIR``.

    >>> atlas = Atlas.open("atlas-out")  # doctest: +SKIP
    >>> atlas.references("features.28", 337, "relevance_sum")[:2]  # doctest: +SKIP
    [{'rank': 0, 'image': 'n02980441/a.jpg', 'value': 0.031, 'y': 4, 'x': 9}, ...]
    """

    def __init__(self, folder: Path, info: dict):
        self.folder, self.info = folder, info

    @classmethod
    def open(cls, folder: str | Path) -> "Atlas":
        folder = Path(folder)
        missing = [name for name in ("atlas.json", *(f"{table}.parquet" for table in TABLES))
                   if not (folder / name).is_file()]
        if missing:
            raise TargetError(f"'{folder}' is no atlas: {missing[0]} is missing (build one with lrp-widgets atlas)")
        return cls(folder, json.loads((folder / "atlas.json").read_text()))

    @property
    def layers(self) -> list[str]:
        return list(self.info["layers"])

    def table(self, name: str) -> pa.Table:
        return pq.read_table(self.folder / f"{name}.parquet")

    @cached_property
    def _references(self) -> pa.Table:
        return self.table("references")

    @cached_property
    def _classes(self) -> pa.Table:
        return self.table("classes")

    def references(self, layer: str, channel: int, statistic: str = "relevance_sum") -> list[dict]:
        """The top-K images of one channel under ``statistic`` (:data:`STATISTICS`), highest first."""
        self._check(layer, statistic)
        table = self._references
        chosen = table.filter(pc.and_(pc.and_(pc.equal(table["layer"], layer), pc.equal(table["channel"], channel)),
                                      pc.equal(table["statistic"], statistic)))
        rows = sorted(chosen.select(["rank", "image", "value", "y", "x"]).to_pylist(), key=lambda row: row["rank"])
        if not rows:
            raise TargetError(f"layer '{layer}' has no channel {channel}")
        return rows

    def class_relevance(self, label: int, layer: str) -> np.ndarray:
        """Mean relevance of each channel of ``layer`` over the class's images."""
        self._check(layer)
        table = self._classes
        chosen = table.filter(pc.and_(pc.equal(table["class"], label), pc.equal(table["layer"], layer)))
        if not chosen.num_rows:
            raise TargetError(f"the atlas has no images of class {label}")
        order = np.argsort(chosen["channel"].to_numpy())
        return chosen["relevance_mean"].to_numpy()[order]

    def class_graph(self, label: int, top_n: int | None = None) -> NeuronGraph:
        """The class-level neuron graph: per layer the ``top_n`` channels of highest mean relevance over the class's
        images, and the mean flows between them of the class's per-image graphs."""
        top_n = top_n or self.info["top_n"]
        nodes = {}
        for layer in self.layers:
            mean = self.class_relevance(label, layer)
            kept = np.argsort(-mean, kind="stable")[:top_n]
            nodes[layer] = [Node(layer, int(i), float(mean[i])) for i in kept]
        images = self.table("images")
        logits = images.filter(pc.equal(images["target"], label))["logit"].to_numpy()
        output = self.info["output"]
        nodes[output] = [Node(output, label, float(logits.mean()))]
        layers = [*self.layers, output]
        edges = self.table("class_edges")
        edges = edges.filter(pc.equal(edges["class"], label)).to_pylist()
        flow = {(e["upper"], e["upper_channel"], e["lower"], e["lower_channel"]): e["flow"] for e in edges}
        flows = {}
        for upper, lower in zip(layers[:0:-1], layers[-2::-1]):
            flows[upper, lower] = torch.tensor([[flow.get((upper, u.index, lower, v.index), 0.0)
                                                 for v in nodes[lower]] for u in nodes[upper]])
        return NeuronGraph(layers, nodes, flows)

    def compare(self, class_a: int, class_b: int, top_n: int | None = None) -> Comparison:
        """What two classes' graphs share and what separates them (the paper's castle against barn)."""
        graphs = [self.class_graph(label, top_n) for label in (class_a, class_b)]
        shared, only_a, only_b, separating = {}, {}, {}, {}
        for layer in self.layers:
            a, b = ({node.index for node in graph.nodes[layer]} for graph in graphs)
            shared[layer], only_a[layer], only_b[layer] = sorted(a & b), sorted(a - b), sorted(b - a)
            means = [self.class_relevance(label, layer) for label in (class_a, class_b)]
            difference = means[0] / max(np.abs(means[0]).sum(), 1e-12) - means[1] / max(np.abs(means[1]).sum(), 1e-12)
            order = np.argsort(-np.abs(difference), kind="stable")[:top_n or self.info["top_n"]]
            separating[layer] = [(int(i), float(difference[i])) for i in order]
        return Comparison((class_a, class_b), shared, (only_a, only_b), separating)

    def _check(self, layer: str, statistic: str = STATISTICS[0]) -> None:
        if layer not in self.info["layers"]:
            raise TargetError(f"the atlas has no layer '{layer}': it has {', '.join(self.layers)}")
        if statistic not in STATISTICS:
            raise TargetError(f"unknown statistic '{statistic}': choose one of {', '.join(STATISTICS)}")
