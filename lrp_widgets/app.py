"""The Voila dashboard: ``lrp-widgets app [--port N] [--weights …] [--no-browser]``.

Serves ``notebooks/explorer.ipynb`` (written next to the package when it is not there) with Voila:
sources stripped, tracebacks hidden from the browser, idle kernels culled.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explorer.ipynb"
APP_SOURCE = """import os
from lrp_widgets import Explorer

Explorer(model=os.environ.get("LRP_WIDGETS_MODEL", "vgg16"),
         weights=os.environ.get("LRP_WIDGETS_WEIGHTS", "auto"),
         image=os.environ.get("LRP_WIDGETS_IMAGE", "castle"),
         device=os.environ.get("LRP_WIDGETS_DEVICE", "cpu"))"""
#: Voila settings for a shared deployment: no tracebacks or sources in the browser; idle kernels are
#: culled after 10 minutes so abandoned tabs give their memory back; at most ``max_kernels`` visitors.
VOILA_SETTINGS = ["--VoilaConfiguration.show_tracebacks=False", "--VoilaConfiguration.strip_sources=True",
                  "--VoilaConfiguration.template=lrp",
                  "--VoilaConfiguration.multi_kernel_manager_class=lrp_widgets.deploy.BoundedKernelManager",
                  "--MappingKernelManager.cull_idle_timeout=600", "--MappingKernelManager.cull_interval=60",
                  "--MappingKernelManager.cull_connected=False"]
MAX_KERNELS = 8
#: where Voila finds the ``lrp`` template (its lab template without CDN requests)
SHARE = Path(__file__).resolve().parent / "share"
TITLE = "LRP explorer: what does the network see?"  # the browser tab's title


def notebook_json() -> dict:
    cell = {"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {}, "outputs": [],
            "source": APP_SOURCE}
    return {"cells": [cell], "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                         "name": "python3"}, "title": TITLE},
            "nbformat": 4, "nbformat_minor": 5}


def app_notebook() -> Path:
    """The app notebook of the checkout, or a generated copy for an installed package."""
    if NOTEBOOK.is_file():
        return NOTEBOOK
    folder = Path(tempfile.mkdtemp(prefix="lrp-widgets-app-"))
    path = folder / "explorer.ipynb"
    path.write_text(json.dumps(notebook_json(), indent=1))
    return path


def voila_command(port: int | None = None, browser: bool = True, max_kernels: int = MAX_KERNELS) -> list[str]:
    command = [sys.executable, "-m", "voila", str(app_notebook()), *VOILA_SETTINGS,
               f"--BoundedKernelManager.max_kernels={max_kernels}"]
    if port is not None:
        command.append(f"--port={port}")
    if not browser:
        command.append("--no-browser")
    return command


def voila_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with our template folder first on Jupyter's data path."""
    return {**env, "JUPYTER_PATH": os.pathsep.join(filter(None, [str(SHARE), env.get("JUPYTER_PATH", "")]))}


def serve(port: int | None = None, weights: str = "auto", model: str = "vgg16", browser: bool = True,
          max_kernels: int = MAX_KERNELS, device: str = "cpu") -> int:
    """Run Voila in the foreground until interrupted."""
    env = voila_env(dict(os.environ, LRP_WIDGETS_WEIGHTS=weights, LRP_WIDGETS_MODEL=model, LRP_WIDGETS_DEVICE=device))
    try:
        return subprocess.call(voila_command(port, browser, max_kernels), env=env)
    except KeyboardInterrupt:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(env: dict[str, str] | None = None, max_kernels: int = MAX_KERNELS, log=subprocess.DEVNULL,
                timeout: float = 60) -> Iterator[str]:
    """Voila serving the app on a free local port while the block runs; yields its URL (tests, benchmarks)."""
    port = free_port()
    process = subprocess.Popen(voila_command(port, browser=False, max_kernels=max_kernels),
                               env=voila_env(dict(os.environ, **(env or {}))), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("voila did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)
