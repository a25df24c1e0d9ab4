"""The shared-server settings (lrp_widgets/deploy.py), as `lrp-widgets app` and a Binder launch run them:
bounded kernels with a clear 503, a closed page's kernel shut down, an open idle page's kept."""
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from traitlets.config import Config

from lrp_widgets.app import free_port, running_app
from lrp_widgets.deploy import (
    CULL_DISCONNECTED_S,
    CULL_INTERVAL_S,
    SERVER_BUDGET,
    configure,
    default_max_kernels,
    memory_limit,
    parse_bytes,
    set_xsrf_cookie,
)

from .conftest import IMAGES
from .test_app_browser import CHROMIUM, chromium

ROOT = Path(__file__).resolve().parents[1]
ENV = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_MODEL": "vgg11", "LRP_WIDGETS_IMAGES": str(IMAGES)}


def test_settings_hide_tracebacks_and_cull_pages_that_went():
    c = configure(Config())
    assert c.VoilaConfiguration.show_tracebacks is False and c.VoilaConfiguration.strip_sources is True
    assert c.VoilaConfiguration.prelaunch_hook is set_xsrf_cookie
    assert c.VoilaExecutor.iopub_timeout >= 60  # a loaded server still sends the app, not a blank page
    assert c.ServerApp.kernel_manager_class == c.VoilaConfiguration.multi_kernel_manager_class
    assert c.MappingKernelManager.cull_connected is False  # an open idle page keeps its kernel
    assert CULL_DISCONNECTED_S + CULL_INTERVAL_S <= 60  # a closed page's kernel goes within about a minute


def test_max_kernels_follows_the_memory():
    assert default_max_kernels(memory=SERVER_BUDGET + 3 * parse_bytes("500M"), budget=parse_bytes("500M")) == 3
    assert default_max_kernels(memory=SERVER_BUDGET, budget=parse_bytes("500M")) == 1  # never 0 (no limit)
    assert 0 < memory_limit() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with pytest.raises(ValueError, match="'lots' is not a memory size"):
        parse_bytes("lots")


def test_a_visitor_beyond_max_kernels_gets_a_clear_503():
    with running_app(ENV, max_kernels=1) as url:
        first = urllib.request.urlopen(url, timeout=300).read().decode()
        assert "application/vnd.jupyter.widget-view+json" in first  # the Explorer cell ran and shows a widget
        assert "Traceback" not in first and "server is full" not in first
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=300)
        text = refused.value.read().decode()
        assert refused.value.code == 503 and "The server is full (1 visitor)" in text
        assert "a place frees" in text and "try again" in text  # says when to come back


def kernel_alive(url: str, kernel: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}api/kernels/{kernel}", timeout=30).close()
        return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_closed_pages_give_their_kernel_back_open_ones_keep_it():
    """Closing a page (the page's own shutdown request) frees its kernel at once; a page that vanishes
    without a word (a crash, a lost network) is culled within about a minute; an open idle page stays."""
    with running_app(ENV) as url, chromium() as browser:
        pages, kernels = {}, {}
        for name in ("open", "closed", "vanished"):
            pages[name] = browser.new_context().new_page()
            pages[name].goto(url, timeout=300_000)
            pages[name].wait_for_selector(".lrp-explorer", timeout=300_000)
            kernels[name] = re.search(r'"kernelId": "([0-9a-f-]{36})"', pages[name].content()).group(1)
        assert all(kernel_alive(url, k) for k in kernels.values())
        pages["closed"].close(run_before_unload=True)  # as a tab is closed or reloaded
        pages["vanished"].context.close()  # no beforeunload: the connection just drops
        start = time.monotonic()
        while kernel_alive(url, kernels["closed"]) and time.monotonic() - start < 10:
            time.sleep(0.5)
        assert not kernel_alive(url, kernels["closed"]), "a closed page's kernel was not shut down at once"
        while kernel_alive(url, kernels["vanished"]) and time.monotonic() - start < 90:
            time.sleep(2)
        gone = time.monotonic() - start
        assert not kernel_alive(url, kernels["vanished"]), "a vanished page's kernel was still there after 90 s"
        assert gone <= CULL_DISCONNECTED_S + 2 * CULL_INTERVAL_S
        assert kernel_alive(url, kernels["open"]), "an open idle page lost its kernel"
        assert "lrp-explorer" in pages["open"].content()


def test_binder_launch_runs_with_the_same_settings():
    """binder/start + the Jupyter server with Voila as its extension (as Binder runs it): the app's template,
    settings and kernel manager apply there too."""
    port = free_port()
    command = [str(ROOT / "binder" / "start"), sys.executable, "-m", "jupyter", "server", "--no-browser",
               f"--port={port}", "--IdentityProvider.token=", "--allow-root", f"--ServerApp.root_dir={ROOT}",
               "--BoundedKernelManager.max_kernels=1"]
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH")}
    server = subprocess.Popen(command, env={**env, **ENV}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/voila/render/notebooks/explorer.ipynb"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = urllib.request.urlopen(url, timeout=300)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(1)
        page = response.read().decode()
        assert "application/vnd.jupyter.widget-view+json" in page and "Traceback" not in page
        assert any(c.startswith("_xsrf=") for c in response.headers.get_all("Set-Cookie"))  # shutdown on close works
        assert "LRP explorer" in page  # the lrp template's title
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=300)
        assert refused.value.code == 503 and "server is full" in refused.value.read().decode()
    finally:
        server.terminate()
        server.wait(30)


def test_app_command_becomes_voila(tmp_path):
    """`lrp-widgets app` replaces itself with Voila: a SIGTERM to the PID it was started with stops the
    server and its kernels."""
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "lrp_widgets.cli", "app", "--weights", "random", "--model", "vgg11",
                            "--no-browser", f"--port={port}"], env={**os.environ, **ENV},
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=300).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and app.poll() is None, "the app did not start"
                time.sleep(1)
        assert b"voila" in Path(f"/proc/{app.pid}/cmdline").read_bytes()  # the same PID is Voila now
        kernels = [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == app.pid]
        assert kernels, "no kernel was started"
        app.terminate()
        app.wait(30)
        time.sleep(2)
        assert not [p for p in kernels if p.exists()], "a kernel outlived the app"
    finally:
        if app.poll() is None:
            app.kill()


def _parent(process: Path) -> int | None:
    try:
        return int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
