"""The case-study images: from a local folder, or downloaded (sha256-checked, cached) from a mirror."""
import contextlib
import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lrp_widgets.errors import ImageError
from lrp_widgets.examples import EXAMPLES, example_path, load_example, mirror

from .conftest import IMAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache, with no local image folder to short-cut the download."""
    monkeypatch.delenv("LRP_WIDGETS_IMAGES", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lrp-widgets" / "images"


@pytest.fixture
def serve(monkeypatch):
    """serve(folder) starts a mirror of ``folder`` for LRP_WIDGETS_IMAGES_URL; returns the paths it is asked for."""
    with contextlib.ExitStack() as stack:
        def start(folder: Path) -> list[str]:
            url, requested = stack.enter_context(mirror(folder))
            monkeypatch.setenv("LRP_WIDGETS_IMAGES_URL", url)
            return requested

        yield start


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples_from_local_folder(name, monkeypatch):
    monkeypatch.delenv("LRP_WIDGETS_IMAGES", raising=False)
    image = load_example(name, folder=IMAGES)
    assert image.mode == "RGB" and min(image.size) > 200
    monkeypatch.setenv("LRP_WIDGETS_IMAGES", str(IMAGES))
    assert example_path(name) == IMAGES / EXAMPLES[name][0]


def test_download_from_mirror_is_checked_and_cached(cache, serve):
    requested = serve(IMAGES)
    path = example_path("zebra")
    filename, _, digest = EXAMPLES["zebra"]
    assert path == cache / filename and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert requested == [f"/{filename}"]
    assert load_example("zebra").mode == "RGB" and example_path("zebra") == path
    assert len(requested) == 1  # the second and third calls used the cache


def test_wrong_hash_is_refused_and_leaves_no_file(cache, serve, tmp_path):
    forged = tmp_path / "mirror"
    forged.mkdir()
    (forged / EXAMPLES["barn"][0]).write_bytes((IMAGES / EXAMPLES["castle"][0]).read_bytes())
    serve(forged)
    with pytest.raises(ImageError, match="sha256 .* expected .*refusing it"):
        example_path("barn")
    assert not cache.exists() or not any(cache.iterdir())  # neither the file nor a .part file


def test_failed_download_is_a_clear_error(cache, monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LRP_WIDGETS_IMAGES_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(ImageError, match=f"could not download http://127.0.0.1:{port}/n02980441_castle.JPEG .*"
                                         "set LRP_WIDGETS_IMAGES"):
        example_path("castle")
    assert not cache.exists()


def test_unknown_example(cache):
    with pytest.raises(ImageError, match="unknown example 'tiger': choose one of castle, barn, zebra"):
        load_example("tiger")


def test_binder_check_passes():
    done = subprocess.run([sys.executable, "binder/check.py"], cwd=ROOT, capture_output=True, text=True, timeout=890)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and len(done.stdout.splitlines()) == 8
