"""The notebooks run top to bottom in the venv's ``python3`` kernel (nbclient) without a cell error; the case
study shows its figures, saves them as full-colour PNGs and, on random weights, says so in a banner."""
from __future__ import annotations

import base64
import io
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import IMAGES

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
REQUIRED = ("case_study.ipynb", "tutorial.ipynb")
ALL = sorted(set(REQUIRED) | {path.name for path in NOTEBOOKS.glob("*.ipynb")})
BANNER = "RANDOM (untrained) weights"
MAX_PNG_BYTES = 700_000  # full colour (a palette posterises the heatmaps): Fig. 5 is ~0.55 MB
CELL_TIMEOUT_S = 600

_executed: dict[str, tuple[object, Path]] = {}


def execute(name: str, scratch: Path):
    """Run ``notebooks/<name>`` once per session (cwd: notebooks/, figures to ``scratch``), return it and
    the figure folder."""
    if name not in _executed:
        path = NOTEBOOKS / name
        assert path.is_file(), f"notebooks/{name} is missing"
        notebook = nbformat.read(path, as_version=4)
        figures = scratch / "figures"
        with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this environment
            patch.setenv("LRP_WIDGETS_IMAGES", str(IMAGES))
            patch.setenv("LRP_WIDGETS_FIGURES", str(figures))
            patch.setenv("MPLBACKEND", "Agg")
            patch.setenv("MPLCONFIGDIR", str(scratch / "matplotlib"))
            patch.setenv("PATH", str(Path(sys.executable).parent), prepend=":")
            client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                             resources={"metadata": {"path": str(NOTEBOOKS)}})
            client.execute()
        _executed[name] = notebook, figures
    return _executed[name]


def outputs(notebook) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def imagenet_weights_cached() -> bool:
    import torch
    from torchvision.models import VGG16_Weights

    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name).is_file()


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_without_errors(name, tmp_path_factory):
    notebook, _ = execute(name, tmp_path_factory.mktemp(name.removesuffix(".ipynb")))
    errors = [output for output in outputs(notebook) if output.output_type == "error"]
    assert not errors, errors


STORED_WITH_OUTPUTS = {"case_study.ipynb": 12, "tutorial.ipynb": 1}  # PNGs at least; notebooks/execute.py


def test_the_case_study_and_tutorial_are_stored_with_their_outputs_and_the_app_without():
    """A reader on a code-hosting site sees the numbers and figures without running anything."""
    for name in ALL:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        if name in STORED_WITH_OUTPUTS:
            stored = outputs(notebook)
            assert all(cell.execution_count for cell in code), f"{name} has a code cell that was not run"
            pictures = [output for output in stored if "image/png" in output.get("data", {})]
            assert len(pictures) >= STORED_WITH_OUTPUTS[name]
            for output in pictures:  # full colour, not a palette
                png = base64.b64decode(output["data"]["image/png"])
                assert Image.open(io.BytesIO(png)).mode in ("RGB", "RGBA"), name
            assert not [output for output in stored if output.output_type == "error"]
            assert (NOTEBOOKS / name).stat().st_size < 8_000_000
        else:
            assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{name} holds outputs"


def test_case_study_shows_and_saves_its_figures(tmp_path_factory):
    notebook, figures = execute("case_study.ipynb", tmp_path_factory.mktemp("case_study"))
    images = [output for output in outputs(notebook) if "image/png" in output.get("data", {})]
    assert len(images) >= 12  # Figs. 5, 6, 7 and the threshold sweep for castle, barn and zebra
    saved = sorted(figures.glob("*.png"))
    kinds = {path.name.split("_")[0] for path in saved}
    assert kinds == {"fig5", "fig6", "fig7", "threshold"} and len(saved) == 12, [p.name for p in saved]
    too_big = [(path.name, path.stat().st_size) for path in saved if path.stat().st_size >= MAX_PNG_BYTES]
    assert not too_big


def test_case_study_banner_says_when_weights_are_random(tmp_path_factory):
    notebook, _ = execute("case_study.ipynb", tmp_path_factory.mktemp("case_study"))
    html = " ".join(str(output.get("data", {}).get("text/html", "")) for output in outputs(notebook))
    pretrained = imagenet_weights_cached()  # after the run: "auto" would have downloaded them if it could
    assert (BANNER in html) != pretrained
    if not pretrained:
        text = " ".join(str(output.get("text", "")) for output in outputs(notebook))
        assert "RANDOM (untrained) weights" in text  # the printed results name the weights too


def test_notebook_links_point_inside_the_repository():
    root = NOTEBOOKS.parent
    for name in ALL:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        text = " ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
        for target in re.findall(r"\]\(([^)#]+)\)|`(\.\./[^`]+)`", text):
            target = next(t for t in target if t)
            if "://" not in target:
                assert (NOTEBOOKS / target).resolve().is_relative_to(root) and (NOTEBOOKS / target).exists(), \
                    (name, target)


def test_the_tutorials_explorer_is_stored_as_a_picture_of_the_app():
    """A stored widget shows nothing without its kernel (JupyterLab shows an untrusted notebook's widget as its
    text, "Explorer(…)"): a reader of the stored tutorial sees a picture of the app instead."""
    notebook = nbformat.read(NOTEBOOKS / "tutorial.ipynb", as_version=4)
    cell = next(cell for cell in notebook.cells if cell.cell_type == "code" and "Explorer(" in cell.source)
    assert [sorted(output.get("data", {})) for output in cell.outputs] == [["image/png", "text/plain"]]
    picture = Image.open(io.BytesIO(base64.b64decode(cell.outputs[0].data["image/png"])))
    assert picture.size[0] >= 1000 and picture.mode in ("RGB", "RGBA")  # a screenshot of the whole app
    assert "widgets" not in notebook.metadata  # no state of a widget that is not shown


def test_the_tutorial_explains_alpha_where_the_app_links():
    """The app's "what is α?" link leads to a section of the tutorial that says what docs/method.md says."""
    from lrp_widgets.views.threshold import ALPHA_TUTORIAL

    path, anchor = ALPHA_TUTORIAL.split("#")
    notebook = nbformat.read(NOTEBOOKS / path, as_version=4)
    markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    start = next(i for i, text in enumerate(markdown) if text.splitlines()[0].lstrip("#").strip().replace(" ", "-")
                 == anchor)
    section = " ".join(markdown[start:start + 2])
    method = (NOTEBOOKS.parent / "docs" / "method.md").read_text()
    for words in ("μ − α·σ", "population", "MSE", "SMAPE", "mean MSE", "fewest"):
        assert words in section and words in method, words
    assert "kept when its score > μ − α·σ" in section
