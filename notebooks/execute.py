"""Run ``case_study.ipynb`` and ``tutorial.ipynb`` and store them with their outputs, so their static figures show
wherever a notebook is rendered without a kernel (e.g. on a code-hosting site). ``python notebooks/execute.py
[NAME …]`` — with the ImageNet weights in torch's cache the stored figures are the pretrained ones, otherwise random
(and labelled so). The Explorer's output is stored as a picture of the app (``docs/app.png``): a stored widget shows
nothing without its kernel (JupyterLab shows an untrusted notebook's widget as its text); running the cell shows the
live app."""
from __future__ import annotations

import base64
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
APP_PICTURE = HERE.parent / "docs" / "app.png"
APP_TEXT = "<the Explorer: a picture of the app; run the cell for the live app>"


def picture_the_app(notebook) -> None:
    """Store every Explorer output as ``APP_PICTURE``, and no widget state."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if str(output.get("data", {}).get("text/plain", "")).startswith("Explorer("):
                output["data"] = {"image/png": base64.b64encode(APP_PICTURE.read_bytes()).decode(),
                                  "text/plain": APP_TEXT}
    notebook.metadata.pop("widgets", None)


def execute(name: str = "case_study.ipynb") -> Path:
    path = HERE / name
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("LRP_WIDGETS_FIGURES", scratch)
        os.environ.setdefault("MPLBACKEND", "Agg")
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}}).execute()
    picture_the_app(notebook)
    nbformat.write(notebook, path)
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or ["case_study.ipynb", "tutorial.ipynb"]:
        print("wrote", execute(name))
