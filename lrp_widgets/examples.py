"""The case-study images (castle, barn, zebra): downloaded once, sha256-checked, cached.

They come from the public ImageNet sample images repository (EliSchwartz/imagenet-sample-images).
``LRP_WIDGETS_IMAGES`` or the ``folder`` argument points at a local copy instead;
``LRP_WIDGETS_IMAGES_URL`` downloads from another base URL (a mirror) instead of ``BASE_URL``.

>>> load_example("zebra", folder="../shared/images").size  # doctest: +SKIP
(500, 375)
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

from PIL import Image

from .engine.images import open_image
from .errors import ImageError

BASE_URL = "https://raw.githubusercontent.com/EliSchwartz/imagenet-sample-images/master/"
#: name → (file name, ImageNet class index, sha256)
EXAMPLES = {
    "castle": ("n02980441_castle.JPEG", 483, "d5e7d5381b58cd3244d23cee97a37cd5184cdc4c4b43ec5148977c0df078a3e6"),
    "barn": ("n02793495_barn.JPEG", 425, "d0f7936a6cb5f03f03c40f84b13910e16028ce8ee07540d8c6759442e4bf9ac3"),
    "zebra": ("n02391049_zebra.JPEG", 340, "ca35cfbead9763232ee94ccb8a9d3a2e2e0bff576a1e22221b210589f6c7bd42"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lrp-widgets" / "images"


def example_path(name: str, folder: str | Path | None = None, base_url: str | None = None) -> Path:
    """The local file of an example: from ``folder`` / ``$LRP_WIDGETS_IMAGES`` if given, else the cache
    (downloading it there first from ``base_url`` / ``$LRP_WIDGETS_IMAGES_URL`` / ``BASE_URL``)."""
    if name not in EXAMPLES:
        raise ImageError(f"unknown example '{name}': choose one of {', '.join(EXAMPLES)}")
    filename, _, digest = EXAMPLES[name]
    folder = folder or os.environ.get("LRP_WIDGETS_IMAGES")
    if folder:
        path = Path(folder) / filename
        if not path.is_file():
            raise ImageError(f"example '{name}' is not in {folder} (expected {filename})")
        _check(path.read_bytes(), digest, str(path))
        return path
    path = cache_dir() / filename
    if not path.is_file():
        base_url = base_url or os.environ.get("LRP_WIDGETS_IMAGES_URL") or BASE_URL
        download(base_url.rstrip("/") + "/" + filename, path, digest)
    return path


def load_example(name: str, folder: str | Path | None = None) -> Image.Image:
    """The example image as RGB."""
    return open_image(example_path(name, folder))


def download(url: str, path: Path, digest: str) -> None:
    """Fetch ``url`` to ``path`` atomically, refusing it unless its sha256 is ``digest``."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as error:
        reason = getattr(error, "reason", error)
        raise ImageError(f"could not download {url} ({reason}); set LRP_WIDGETS_IMAGES to a folder "
                         "holding the example images") from None
    _check(data, digest, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as part:
        try:
            part.write(data)
        except OSError as error:  # a full disk: leave nothing half-written behind
            Path(part.name).unlink(missing_ok=True)
            raise ImageError(f"could not save {path.name} to {path.parent} ({error})") from None
    Path(part.name).replace(path)


def _check(data: bytes, digest: str, source: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ImageError(f"{source} has sha256 {actual[:12]}…, expected {digest[:12]}…: refusing it")


@contextlib.contextmanager
def mirror(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` on 127.0.0.1 (a free port) as a local mirror for ``LRP_WIDGETS_IMAGES_URL``;
    yields its URL and the list of paths requested (offline builds, checks and tests)."""
    served: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            served.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", served
    finally:
        server.shutdown()
        server.server_close()
