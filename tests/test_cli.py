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


USER_NET = "tests.user_models:build"


def expected_logits(net, mean, std, size=32):
    """What the user's network gives the castle, resized to round(size·256/224), centre-cropped and normalised."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                    transforms.ToTensor(), transforms.Normalize(mean, std)])
    with torch.no_grad():
        return net.eval()(transform(Image.open(CASTLE).convert("RGB"))[None])[0]


def test_explain_your_own_network_by_import_path(tmp_path, capsys):
    """--model module:function with its normalisation, input size and class names: the logits are the network's
    on that input, the explanation is at its size."""
    from .user_models import build

    categories = tmp_path / "classes.txt"
    categories.write_text("cat\ndog\n\nship\n")
    out = tmp_path / "out"
    assert main(["explain", str(CASTLE), "--model", USER_NET, "--mean", "0.4,0.5,0.6", "--std", "0.2,0.25,0.3",
                 "--size", "32", "--categories", str(categories), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["weights"], summary["pretrained"]) == (USER_NET, "own", True)
    logits = expected_logits(build(), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    target = int(logits.argmax())
    assert summary["explained_class"] == {"index": target, "name": ["cat", "dog", "ship"][target],
                                          "logit": pytest.approx(float(logits[target]), abs=1e-4)}
    assert [c["name"] for c in summary["top5"]] == [["cat", "dog", "ship"][int(i)] for i in logits.argsort(descending=True)]
    assert np.load(out / "relevance.npy").shape == (3, 32, 32)
    assert json.loads((out / "graph.json").read_text())["nodes"][-1]["data"]["layer"] == "classifier"
    assert "warning" not in capsys.readouterr().err  # its own weights: no untrained warning


def test_your_weights_file_is_loaded_into_your_network(tmp_path):
    from .user_models import SmallNet

    other = SmallNet(seed=1)
    weights = tmp_path / "trained.pt"
    torch.save(other.state_dict(), weights)
    common = [str(CASTLE), "--model", USER_NET, "--size", "32"]
    assert main(["explain", *common, "--out", str(tmp_path / "own")]) == 0
    assert main(["explain", *common, "--weights", str(weights), "--out", str(tmp_path / "file")]) == 0
    own, loaded = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("own", "file"))
    assert loaded["weights"] == str(weights) and own["weights"] == "own"
    for summary, net in ((own, SmallNet()), (loaded, other)):
        logits = expected_logits(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's by default
        assert summary["explained_class"]["logit"] == pytest.approx(float(logits.max()), abs=1e-4)
    assert own["explained_class"]["logit"] != pytest.approx(loaded["explained_class"]["logit"], abs=1e-3)


def test_your_network_from_the_current_folder_or_a_file(tmp_path, monkeypatch):
    """A module in the current folder is importable (as uvicorn does), and a .py file can be named by its path."""
    (tmp_path / "lrp_cwd_nets.py").write_text("from tests.user_models import SmallNet\n\nnet = SmallNet()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        for spec in ("lrp_cwd_nets:net", "lrp_cwd_nets.py:net"):
            assert main(["explain", str(CASTLE), "--model", spec, "--size", "32", "--out", spec]) == 0
            assert json.loads((tmp_path / spec / "summary.json").read_text())["model"] == spec
    finally:
        sys.modules.pop("lrp_cwd_nets", None)
        sys.modules.pop("_lrp_widgets_user.lrp_cwd_nets", None)


def test_deconv_of_your_network_at_its_size(tmp_path):
    png, npy = tmp_path / "d.png", tmp_path / "d.npy"
    assert main(["deconv", str(CASTLE), "--model", "tests.user_models:net", "--size", "32", "--layer", "features.3",
                 "--channel", "2", "--out", str(png), "--npy", str(npy)]) == 0
    assert Image.open(png).size == (64, 32) and np.load(npy).shape == (3, 32, 32)


def bad_user_models(tmp_path):
    raises = tmp_path / "raises.py"
    raises.write_text("1 / 0\n")
    misfit = tmp_path / "misfit.pt"
    torch.save({"features.0.weight": torch.zeros(8, 3, 5, 5), "head.weight": torch.zeros(3)}, misfit)
    yours = ["--model", USER_NET, "--size", "32"]
    return [
        (["--model", "vgg17"], "unknown model 'vgg17': give a torchvision name"),
        (["--model", "tests.no_such_module:build"], "model 'tests.no_such_module:build': no module named"),
        (["--model", f"{tmp_path / 'none.py'}:build"], f"file '{tmp_path / 'none.py'}' does not exist"),
        (["--model", f"{raises}:build"], f"importing {raises} failed (ZeroDivisionError: division by zero)"),
        (["--model", "tests.user_models:missing"], "tests.user_models has no attribute 'missing'"),
        (["--model", "tests.user_models:NUMBER"], "NUMBER (of type int) is not a torch.nn.Module nor a function"),
        (["--model", "tests.user_models:broken"], "broken() failed (RuntimeError: no network today)"),
        (["--model", "tests.user_models:not_a_module"], "not_a_module() returned a value of type list"),
        ([*yours, "--weights", "imagenet"], "weights 'imagenet' are for torchvision's models"),
        ([*yours, "--weights", "random"], "weights 'random' are for torchvision's models"),
        ([*yours, "--weights", str(misfit)], f"does not fit {USER_NET} (missing: classifier.bias, classifier.weight, "
                                                "features.0.bias …; unexpected: head.weight; wrong shape: features.0.weight)"),
        ([*yours, "--mean", "0.5,0.5"], "takes 3-channel inputs: give mean and std with 3 values each (not 2 and 3)"),
        ([*yours, "--std", "0.5,x,0.5"], "--std '0.5,x,0.5': write one number per input channel"),
        ([*yours, "--std", "0.5,0,0.5"], "std must be positive"),
        ([*yours, "--size", "0"], "the input size must be at least 1 pixel"),
        (["--model", USER_NET], "does not take inputs of shape (1, 3, 224, 224) (RuntimeError: mat1 and mat2"),
        ([*yours, "--categories", str(tmp_path / "none.txt")], "categories file"),
        (["--model", "vgg11", "--mean", "0.5,0.5,0.5", "--size", "32"], "--mean, --size go with your own network"),
        (["--model", "vgg11", "--weights", "own"], "--weights own go with your own network"),
    ]


def test_bad_user_models_give_one_line_status_2_and_no_output(tmp_path, capsys):
    for args, message in bad_user_models(tmp_path):
        out = tmp_path / "out"
        assert main(["explain", str(CASTLE), *args, "--out", str(out)]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
        assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    assert main(["deconv", str(CASTLE), "--model", "tests.user_models:missing", "--layer", "features.0",
                 "--channel", "0", "--out", str(tmp_path / "d.png")]) == 2
    assert main(["app", "--model", USER_NET]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "has no attribute 'missing'" in lines[0] and "the app opens with a torchvision" in lines[1]
