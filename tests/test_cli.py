"""The CLI writes its three files, and every bad input gives one line on stderr, status 2, no output."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lrp_widgets.cli import main
from lrp_widgets.engine.models import load_model
from lrp_widgets.errors import WeightsError

from .conftest import CASTLE


def test_explain_writes_relevance_heatmap_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(CASTLE), "--weights", "random", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["graph.json", "heatmap.png", "path_activation.png",
                                                     "path_relevance.png", "paths.json", "relevance.npy",
                                                     "summary.json", "threshold.json", "threshold.png"]
    paths = json.loads((out / "paths.json").read_text())
    assert paths["k"] == 5 and paths["n"] == 8 ** 15 and len(paths["paths"]) == 5
    assert paths["paths"][0]["nodes"][0][0] == "classifier.6" and len(paths["paths"][0]["nodes"]) == 16
    graph = json.loads((out / "graph.json").read_text())
    assert len(graph["nodes"]) == 8 * 15 + 1 and {"source", "target", "weight"} <= set(graph["edges"][0]["data"])
    sweep = json.loads((out / "threshold.json").read_text())
    assert sweep["layer"] == "features.28" and len(sweep["alphas"]) == 20 and "alpha" in sweep["optimal"]
    relevance = np.load(out / "relevance.npy")
    assert relevance.shape == (3, 224, 224) and relevance.dtype == np.float32
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["top5"]) == 5 and summary["pretrained"] is False
    assert summary["explained_class"]["index"] == summary["top5"][0]["index"]
    assert abs(summary["input_relevance_sum"] - float(relevance.sum())) < 1e-3 * abs(relevance).sum()
    assert summary["layer_relevance_sums"]["classifier.6"] == pytest.approx(summary["explained_class"]["logit"])
    assert Image.open(out / "heatmap.png").size[0] > 224
    assert "random (untrained) weights" in capsys.readouterr().err


def test_explain_another_class(tmp_path):
    out = tmp_path / "out"
    assert main(["explain", str(CASTLE), "--weights", "random", "--target", "483", "--out", str(out),
                 "--model", "vgg11"]) == 0
    assert json.loads((out / "summary.json").read_text())["explained_class"]["name"] == "castle"


def test_explain_a_resnet_with_rules_by_name_and_graph_layers(tmp_path):
    """--preset, --rule (applied: the relevance changes) and the graph over ResNet-18's blocks."""
    common = [str(CASTLE), "--weights", "random", "--model", "resnet18", "--preset", "epsilon-gamma-box"]
    assert main(["explain", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["explain", *common, "--rule", "layer4.1.conv2=gamma:2", "--rule", "conv1=flat",
                 "--graph-layers", "layer2.1,layer4.0,fc", "--layer", "layer3.1", "--out", str(tmp_path / "b")]) == 0
    default = json.loads((tmp_path / "a" / "graph.json").read_text())
    assert [n["data"]["layer"] for n in default["nodes"]][::8][:8] == [f"layer{i}.{j}.relu@1" for i in (1, 2, 3, 4)
                                                                       for j in (0, 1)]
    assert json.loads((tmp_path / "a" / "threshold.json").read_text())["layer"] == "layer4.1.relu@1"
    chosen = json.loads((tmp_path / "b" / "graph.json").read_text())
    assert sorted({n["data"]["layer"] for n in chosen["nodes"]}) == ["fc", "layer2.1.relu@1", "layer4.0.relu@1"]
    assert json.loads((tmp_path / "b" / "threshold.json").read_text())["layer"] == "layer3.1.relu@1"
    a, b = (np.load(tmp_path / name / "relevance.npy") for name in "ab")
    assert np.abs(a - b).max() > 0.01 * np.abs(a).max()


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def bad_inputs(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(CASTLE.read_bytes()[:4000])
    wrong = tmp_path / "vgg11.pth"
    torch.save(load_model("vgg11", "random").module.state_dict(), wrong)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Evil()))
    image = str(CASTLE)
    return [
        ([str(tmp_path / "missing.jpg")], "does not exist"),
        ([str(text)], "not an image"),
        ([str(truncated)], "not an image we can read (truncated after"),
        ([image, "--weights", str(wrong)], "does not fit vgg16"),
        ([image, "--weights", str(evil)], "not a weights file that can be loaded safely"),
        ([image, "--weights", str(tmp_path / "none.pth")], "does not exist"),
        ([image, "--target", "1000"], "out of range"),
        ([image, "--layer", "features.99"], "unknown layer 'features.99'"),
        ([image, "--rule", "features.0"], "--rule 'features.0': write NAME=RULE"),
        ([image, "--rule", "features.0=gama:0.25"], "unknown rule 'gama'"),
        ([image, "--rule", "features.0=gamma:big"], "rule 'gamma:big': its parameters must be numbers"),
        ([image, "--rule", "layer9=gamma"], "rule given for unknown layer(s) layer9"),
        ([image, "--graph-layers", "features.0,nope"], "unknown layer 'nope'"),
    ]


def test_bad_inputs_give_one_line_status_2_and_no_output(tmp_path, capsys):
    for args, message in bad_inputs(tmp_path):
        out = tmp_path / "out"
        extra = [] if "--weights" in args else ["--weights", "random"]
        assert main(["explain", *args, *extra, "--out", str(out)]) == 2, args
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, captured.err)
        assert "this must never run" not in captured.out
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_missing_imagenet_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens: the download fails at once
    with pytest.raises(WeightsError, match="pass it with --weights PATH"):
        load_model("vgg11", "imagenet", progress=False)
    assert not any((tmp_path / "hub").rglob("*.pth"))


def test_local_weights_file_loads(tmp_path):
    state = load_model("vgg11", "random").module.state_dict()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    model = load_model("vgg11", str(path))
    assert model.pretrained and torch.equal(model.module.state_dict()["features.0.weight"], state["features.0.weight"])


def test_entry_point_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lrp_widgets.cli", "explain", str(tmp_path / "nope.png"),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
