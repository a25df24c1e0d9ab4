"""The dataset atlas: top-K reference images equal to zennit-crp's FeatureVisualization, the statistics and class
sums by hand on a tiny network, shards merged exactly, a killed run resumed, bad files skipped and bad arguments
refused in one line with nothing written."""
from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import VGG16_Weights

from lrp_widgets.atlas import Atlas, build_atlas
from lrp_widgets.atlas.folder import list_images
from lrp_widgets.cli import main
from lrp_widgets.engine.models import LoadedModel

from .atlas_folders import BAD_FILES, case_study_folder
from .conftest import random_model
from .peers import FolderDataset, crp_references

TABLES = ("references", "images", "classes", "class_edges")
ROOT = Path(__file__).resolve().parents[1]


def tables(folder: Path) -> dict:
    return {name: pq.read_table(folder / f"{name}.parquet").to_pydict() for name in TABLES}


# --- against zennit-crp -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return case_study_folder(tmp_path_factory.mktemp("folder"), per_class=2)


@pytest.fixture(scope="module")
def vgg16() -> LoadedModel:
    return LoadedModel.of(random_model("vgg16"), VGG16_Weights.IMAGENET1K_V1.meta["categories"], "vgg16")


@pytest.mark.parametrize("max_target", ["sum", "max"])
def test_references_equal_zennit_crp_feature_visualization(folder, vgg16, max_target, tmp_path):
    """VGG16 (random weights and biases), the paper's rules, conv4_3 and conv5_3: crp hooked on their ReLUs
    (features.22, .29) gives the rectified activation and the same relevance. K = 5 of 12 images, so the choice of
    images is tested, not only their order."""
    k = 5
    atlas = build_atlas(folder, vgg16, tmp_path / "atlas", ["features.21", "features.28"], k=k, progress=False,
                        workers=0)
    readable = [item for item in list_images(folder, vgg16.categories) if item.path not in BAD_FILES]
    crp = crp_references(vgg16.module, FolderDataset(folder, readable, vgg16.preprocess), ["features.22", "features.29"],
                         max_target, tmp_path / "crp", k=k)
    for (what, crp_layer), (images, values, positions) in crp.items():
        layer = {"features.22": "features.21", "features.29": "features.28"}[crp_layer]
        scale = np.abs(values).max()
        overlap = []
        for channel in range(values.shape[1]):
            rows = atlas.references(layer, channel, f"{what}_{max_target}")
            ours = np.array([row["value"] for row in rows])
            assert np.abs(ours - values[:, channel]).max() <= 1e-3 * scale, (what, layer, channel)
            theirs = {readable[i].path for i in images[:, channel]}
            overlap.append(len(theirs & {row["image"] for row in rows}) / k)
            if len(set(values[:, channel])) == k and ours[0] > 0:  # no ties: the same image at each rank, same place
                top = rows[0]
                assert top["image"] == readable[images[0, channel]].path
                width = 28 if layer == "features.21" else 14
                assert (top["y"], top["x"]) == divmod(int(positions[0, channel]), width)
        assert np.mean(overlap) >= 0.95, (what, layer, np.mean(overlap))


def test_bad_files_are_skipped_and_listed(folder, vgg16, tmp_path):
    atlas = build_atlas(folder, vgg16, tmp_path / "atlas", ["features.28"], k=3, progress=False, workers=2)
    skipped = (tmp_path / "atlas" / "skipped.csv").read_text().splitlines()
    assert skipped[0] == "file,reason" and sorted(line.split(",")[0] for line in skipped[1:]) == sorted(BAD_FILES)
    assert "truncated" in (tmp_path / "atlas" / "skipped.csv").read_text()
    images = atlas.table("images").to_pydict()
    assert len(images["image"]) == 12 and not set(images["image"]) & set(BAD_FILES)
    assert {label for path, label in zip(images["image"], images["label"]) if path.startswith("n02980441")} == {483}
    assert images["target"] == images["label"]  # explained for the folder's class


# --- by hand on a tiny network ----------------------------------------------------------------------------------------

#: the linear layer's weights: class 0 relies on blue, class 1 on red
W = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
COLOURS = {"a": [(255, 0, 0), (0, 255, 0), (51, 102, 204)], "1": [(0, 0, 255), (204, 102, 51), (102, 102, 102)]}


def tiny() -> LoadedModel:
    """An identity 1×1 convolution, ReLU, global average pool and ``W``: for a flat image of colour a (0–1) and class
    t, LRP-0 gives channel c of the convolution the relevance W[t, c] · a_c, spread evenly over its 4×4 map."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    linear = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[:, :, None, None])
        linear.weight.copy_(torch.tensor(W, dtype=torch.float32))
    module = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()
    return LoadedModel.of(module, ["a", "b"], "tiny", mean=(0, 0, 0), std=(1, 1, 1), size=4)


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    for name, colours in COLOURS.items():  # "a" names class 0 by category, "1" class 1 by index
        (tmp_path / "flat" / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "flat" / name / f"{i}.png")
    return tmp_path / "flat"


def hand_relevance() -> dict[str, np.ndarray]:
    """Per image (sorted paths), W[t, c] · a_c."""
    return {f"{name}/{i}.png": W[0 if name == "a" else 1] * np.array(colour) / 255
            for name, colours in COLOURS.items() for i, colour in enumerate(colours)}


def test_statistics_and_class_sums_by_hand(flat_folder, tmp_path):
    atlas = build_atlas(flat_folder, tiny(), tmp_path / "atlas", ["0"], k=2, preset="zero", progress=False,
                        workers=0)
    relevance = hand_relevance()
    paths = sorted(relevance)
    for channel in range(3):
        normalised = {path: relevance[path][channel] / np.abs(relevance[path]).sum() for path in paths}
        expected = sorted(paths, key=lambda path: (-normalised[path], path))[:2]
        for statistic in ("relevance_sum", "relevance_max"):  # a flat map: its maximum is a 16th of its sum
            rows = atlas.references("0", channel, statistic)
            assert [row["image"] for row in rows] == expected
            assert [row["value"] for row in rows] == pytest.approx([normalised[p] for p in expected], abs=1e-6)
            assert [(row["y"], row["x"]) for row in rows] == [(0, 0), (0, 0)]
        activation = {path: np.array(c) / 255 for name, cs in COLOURS.items() for path, c in
                      zip([f"{name}/{i}.png" for i in range(3)], cs)}
        expected = sorted(paths, key=lambda p: (-activation[p][channel] / activation[p].sum(), p))[:2]
        assert [row["image"] for row in atlas.references("0", channel, "activation_sum")] == expected
    for label, name in ((0, "a"), (1, "1")):
        values = np.array([relevance[path] for path in paths if path.startswith(f"{name}/")])
        assert atlas.class_relevance(label, "0") == pytest.approx(values.mean(0), abs=1e-6)
        classes = atlas.table("classes").to_pydict()
        std = [s for c, s in zip(classes["class"], classes["relevance_std"]) if c == label]
        assert std == pytest.approx(values.std(0), abs=1e-6)
        graph = atlas.class_graph(label, top_n=2)  # the class's two channels of highest mean relevance
        assert [node.index for node in graph.nodes["0"]] == list(np.argsort(-values.mean(0))[:2])
        assert graph.class_node.index == label
        # the flow from the class to a channel is its relevance (each image's graph keeps only 2 channels: absent 0)
        flows = {int(i): v for i, v in zip([n.index for n in graph.nodes["0"]], graph.flows["4", "0"][0].tolist())}
        for channel, flow in flows.items():
            kept = [v[channel] if channel in np.argsort(-v)[:2] else 0.0 for v in values]
            assert flow == pytest.approx(np.mean(kept), abs=1e-6)
    comparison = atlas.compare(0, 1, top_n=1)  # class means: a [0.4, 0.93, 0.8], 1 [1.2, 0.53, 0.53]
    assert comparison.only[0]["0"] == [1] and comparison.only[1]["0"] == [0] and comparison.shared["0"] == []


def test_shards_merge_to_the_same_atlas(flat_folder, tmp_path):
    """One image a shard and one batch a shard, in any batch size: the same tables (the merge is exact)."""
    common = dict(layers=["0"], k=3, preset="zero", progress=False, workers=0)
    build_atlas(flat_folder, tiny(), tmp_path / "one", shard_size=100, batch_size=6, **common)
    build_atlas(flat_folder, tiny(), tmp_path / "many", shard_size=1, batch_size=1, **common)
    build_atlas(flat_folder, tiny(), tmp_path / "odd", shard_size=4, batch_size=3, **common)
    assert tables(tmp_path / "one") == tables(tmp_path / "many") == tables(tmp_path / "odd")
    assert not (tmp_path / "one" / ".shards").exists()


# --- the command line: resume, bad arguments --------------------------------------------------------------------------

def pooled_folder(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for label in range(3):
        (root / str(label)).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / str(label) / f"{i:03d}.png")
    return root


def atlas_command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lrp_widgets.cli", "atlas", str(folder), "--model", "tests.user_models:pooled",
            "--size", "32", "--layers", "0,2", "--top", "4", "--preset", "zero", "--out", str(out), *extra]


MARK = 12345.0


def test_a_killed_run_resumes_without_redoing_its_shards(tmp_path):
    folder = pooled_folder(tmp_path / "folder", 100)
    options = ["--shard-size", "10", "--batch-size", "2", "--workers", "0"]
    run = subprocess.Popen(atlas_command(folder, tmp_path / "out", *options), cwd=ROOT, stderr=subprocess.PIPE)
    shards = tmp_path / "out" / ".shards"
    deadline = time.monotonic() + 120
    while len(list(shards.glob("shard-*.pkl"))) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = len(list(shards.glob("shard-*.pkl")))
    assert 2 <= done < 30 and not (tmp_path / "out" / "atlas.json").exists(), "the run was not stopped midway"
    first = shards / "shard-00000.pkl"  # marked: the resumed run must take it as it is, not explain its images again
    partial = pickle.loads(first.read_bytes())
    partial.images[0]["logit"] = MARK
    first.write_bytes(pickle.dumps(partial))
    resumed = subprocess.run(atlas_command(folder, tmp_path / "out", *options, "--resume"), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {done} of 30 shards done" in resumed.stderr
    fresh = subprocess.run(atlas_command(folder, tmp_path / "fresh", *options), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    resumed_tables, fresh_tables = tables(tmp_path / "out"), tables(tmp_path / "fresh")
    assert resumed_tables["images"]["logit"][0] == MARK != fresh_tables["images"]["logit"][0]
    resumed_tables["images"]["logit"][0] = fresh_tables["images"]["logit"][0]
    assert resumed_tables == fresh_tables
    assert "wrote the atlas of 300 images (0 skipped" in resumed.stdout


def test_resume_refuses_a_run_of_other_options(tmp_path):
    folder = pooled_folder(tmp_path / "folder", 2)
    (tmp_path / "out" / ".shards").mkdir(parents=True)
    (tmp_path / "out" / ".shards" / "plan.json").write_text("{}")
    result = subprocess.run(atlas_command(folder, tmp_path / "out", "--resume"), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "start it anew without --resume" in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--layers", "features.99"], "unknown layer 'features.99'"),
    (["--top", "0"], "--top K must be at least 1, not 0"),
    (["--layers", "classifier.6"], "carries no relevance a class hands down"),
])
def test_bad_arguments_get_one_line_and_nothing_is_written(folder, tmp_path, capsys, arguments, message):
    out = tmp_path / "out"
    assert main(["atlas", str(folder), "--model", "vgg11", "--weights", "random", *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert not out.exists()


def test_folders_without_images_or_with_unknown_classes_are_refused(tmp_path, capsys):
    (tmp_path / "empty" / "n02980441").mkdir(parents=True)
    (tmp_path / "unknown" / "not_a_class").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "unknown" / "not_a_class" / "a.png")
    for name, message in (("empty", "holds no image files"), ("unknown", "sub-folder 'not_a_class'"),
                          ("missing", "does not exist")):
        out = tmp_path / f"out-{name}"
        assert main(["atlas", str(tmp_path / name), "--model", "vgg11", "--weights", "random", "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
        assert not out.exists()


def test_opening_what_is_no_atlas_says_so(tmp_path):
    with pytest.raises(Exception, match="is no atlas: atlas.json is missing"):
        Atlas.open(tmp_path)


def test_predicted_classes_are_explained_when_asked(flat_folder, tmp_path):
    """W's class 1 wins for red-heavy colours, class 0 for blue-heavy: each image explained for its winner."""
    atlas = build_atlas(flat_folder, tiny(), tmp_path / "atlas", ["0"], k=2, target="predicted", preset="zero",
                        progress=False, workers=0)
    images = atlas.table("images").to_pydict()
    colours = [np.array(c) / 255 for name in sorted(COLOURS) for c in COLOURS[name]]  # "1" sorts before "a"
    winners = [int(np.argmax(W @ colour)) for colour in colours]
    assert images["target"] == images["predicted"] == winners and winners != images["label"]
    assert atlas.class_relevance(1, "0") == pytest.approx(
        np.mean([W[1] * c for c, w in zip(colours, winners) if w == 1], 0), abs=1e-6)


def test_oversized_images_are_skipped_too(flat_folder, tmp_path):
    """A PNG of 90 megapixels (a few kB on disk: a decompression bomb to Pillow) is skipped, named and explained why."""
    Image.new("1", (9500, 9500)).save(flat_folder / "a" / "huge.png")
    atlas = build_atlas(flat_folder, tiny(), tmp_path / "atlas", ["0"], k=2, preset="zero", progress=False, workers=0)
    skipped = (tmp_path / "atlas" / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and skipped[1].startswith("a/huge.png,") and "too many pixels" in skipped[1]
    assert atlas.info["images"] == 6 and atlas.info["skipped"] == 1
