"""The Voila dashboard behind ``lrp-widgets app`` (options: ``lrp-widgets app --help``).

Serves ``notebooks/explorer.ipynb`` (for an installed package without the checkout, a copy generated in a
temporary folder) with Voila and the shared-server settings of :mod:`lrp_widgets.deploy`: sources stripped,
tracebacks hidden from the browser, as many kernels as the memory holds, a closed page's kernel shut down.
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

Explorer(model=os.environ.get("LRP_WIDGETS_MODEL") or None,
         weights=os.environ.get("LRP_WIDGETS_WEIGHTS") or None,
         image=os.environ.get("LRP_WIDGETS_IMAGE", "castle"),
         device=os.environ.get("LRP_WIDGETS_DEVICE", "cpu"),
         atlas=os.environ.get("LRP_WIDGETS_ATLAS") or None)"""
#: where Voila finds the ``lrp`` template (data) and the server settings of ``lrp_widgets.deploy`` (config)
SHARE = Path(__file__).resolve().parent / "share"
CONFIG = SHARE / "jupyter_config"
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


def voila_command(port: int | None = None, browser: bool = True, max_kernels: int | None = None,
                  memory_budget: int | None = None) -> list[str]:
    """Voila serving the app; ``max_kernels`` None: as many as the memory holds (``lrp_widgets.deploy``)."""
    command = [sys.executable, "-m", "voila", str(app_notebook())]
    if max_kernels is not None:
        command.append(f"--BoundedKernelManager.max_kernels={max_kernels}")
    if memory_budget is not None:
        command.append(f"--BoundedKernelManager.kernel_budget={memory_budget}")
    if port is not None:
        command.append(f"--port={port}")
    if not browser:
        command.append("--no-browser")
    return command


def voila_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with our template first on Jupyter's data path and our settings first on its config path."""
    def first(folder: Path, variable: str) -> str:
        return os.pathsep.join(filter(None, [str(folder), env.get(variable, "")]))
    return {**env, "JUPYTER_PATH": first(SHARE, "JUPYTER_PATH"),
            "JUPYTER_CONFIG_PATH": first(CONFIG, "JUPYTER_CONFIG_PATH")}


def serve(port: int | None = None, weights: str | None = None, model: str | None = None, browser: bool = True,
          max_kernels: int | None = None, device: str = "cpu", memory_budget: int | None = None,
          atlas: str | None = None) -> None:
    """Become Voila (exec): a signal to this process (Ctrl-C, a supervisor, a container stop) reaches Voila,
    which shuts its kernels down. ``model``/``weights`` None: the atlas's, else vgg16 and auto."""
    env = voila_env(dict(os.environ, LRP_WIDGETS_WEIGHTS=weights or "", LRP_WIDGETS_MODEL=model or "",
                         LRP_WIDGETS_DEVICE=device, LRP_WIDGETS_ATLAS=str(Path(atlas).resolve()) if atlas else ""))
    command = voila_command(port, browser, max_kernels, memory_budget)
    os.execve(command[0], command, env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(env: dict[str, str] | None = None, max_kernels: int | None = 0, log=subprocess.DEVNULL,
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
