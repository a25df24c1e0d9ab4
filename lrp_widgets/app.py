"""The Voila dashboard: ``lrp-widgets app [--port N] [--weights …] [--no-browser]``.

Serves ``notebooks/explorer.ipynb`` (written next to the package when it is not there) with Voila:
sources stripped, tracebacks hidden from the browser, idle kernels culled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explorer.ipynb"
APP_SOURCE = """import os
from lrp_widgets import Explorer

Explorer(model=os.environ.get("LRP_WIDGETS_MODEL", "vgg16"),
         weights=os.environ.get("LRP_WIDGETS_WEIGHTS", "auto"),
         image=os.environ.get("LRP_WIDGETS_IMAGE", "castle"))"""
#: Voila settings for a shared deployment: no tracebacks or sources in the browser; idle kernels are
#: culled after 10 minutes so abandoned tabs give their memory back.
VOILA_SETTINGS = ["--VoilaConfiguration.show_tracebacks=False", "--VoilaConfiguration.strip_sources=True",
                  "--MappingKernelManager.cull_idle_timeout=600", "--MappingKernelManager.cull_interval=60",
                  "--MappingKernelManager.cull_connected=False"]


def notebook_json() -> dict:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": APP_SOURCE}
    return {"cells": [cell], "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                         "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}


def app_notebook() -> Path:
    """The app notebook of the checkout, or a generated copy for an installed package."""
    if NOTEBOOK.is_file():
        return NOTEBOOK
    folder = Path(tempfile.mkdtemp(prefix="lrp-widgets-app-"))
    path = folder / "explorer.ipynb"
    path.write_text(json.dumps(notebook_json(), indent=1))
    return path


def voila_command(port: int | None = None, browser: bool = True) -> list[str]:
    command = [sys.executable, "-m", "voila", str(app_notebook()), *VOILA_SETTINGS]
    if port is not None:
        command.append(f"--port={port}")
    if not browser:
        command.append("--no-browser")
    return command


def serve(port: int | None = None, weights: str = "auto", model: str = "vgg16", browser: bool = True) -> int:
    """Run Voila in the foreground until interrupted."""
    env = dict(os.environ, LRP_WIDGETS_WEIGHTS=weights, LRP_WIDGETS_MODEL=model)
    try:
        return subprocess.call(voila_command(port, browser), env=env)
    except KeyboardInterrupt:
        return 0
