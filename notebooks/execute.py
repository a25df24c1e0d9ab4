"""Run ``case_study.ipynb`` and store it with its outputs, so its static figures show wherever the notebook
is rendered without a kernel (e.g. on a code-hosting site). ``python notebooks/execute.py`` — with the
ImageNet weights in torch's cache the stored figures are the pretrained ones, otherwise random (and
labelled so)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(name: str = "case_study.ipynb") -> Path:
    path = HERE / name
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("LRP_WIDGETS_FIGURES", scratch)
        os.environ.setdefault("MPLBACKEND", "Agg")
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(notebook, path)
    return path


if __name__ == "__main__":
    print("wrote", execute())
