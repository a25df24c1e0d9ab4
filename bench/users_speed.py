"""Issue 6: four visitors at once on one Voila server (one kernel each), each exploring another image.

Reports how long each waits for its explanation (graph, paths and sweep done) and each kernel's RSS.
"""
from __future__ import annotations

import time
from pathlib import Path

from lrp_widgets.app import running_app
from tests.test_app_browser import chromium

from .common import Row
from .models import IMAGES

VISITORS = ("castle", "barn", "zebra", "upload")


def kernel_rss_mb() -> list[float]:
    sizes = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
            if b"ipykernel_launcher" in cmdline:
                sizes.append(int(next(l for l in status.read_text().splitlines() if l.startswith("VmRSS")).split()[1]) / 1024)
        except (OSError, StopIteration):
            continue
    return sizes


def run(repeat: int = 1, threads: int = 2, device: str = "cpu") -> list[Row]:
    from PIL import Image

    upload = Path("/tmp/lrp-widgets-visitor.png")
    Image.open(IMAGES / "n02391049_zebra.JPEG").rotate(90, expand=True).save(upload)
    waits, peak = {}, 0.0
    env = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_IMAGES": str(IMAGES)}
    with running_app(env) as url, chromium() as browser:
        pages = {name: browser.new_page(viewport={"width": 1440, "height": 1000}) for name in VISITORS}
        start = time.perf_counter()
        for page in pages.values():
            page.goto(url, wait_until="commit", timeout=300_000)
        chosen = set()
        while len(waits) < len(pages) and time.perf_counter() - start < 900:
            for name, page in pages.items():
                if name in waits:
                    continue
                text = page.evaluate("() => document.body ? document.body.innerText : ''")
                if name not in chosen and "explain" in text and "example" in text:
                    if name == "upload":
                        with page.expect_file_chooser() as chooser:
                            page.get_by_role("button", name="upload").click()
                        chooser.value.set_files(str(upload))
                    elif name != "castle":
                        page.get_by_role("button", name=name).click()
                    chosen.add(name)
                    page.wait_for_timeout(500)
                elif name in chosen and "optimal α" in text and "working:" not in text:
                    waits[name] = time.perf_counter() - start
            peak = max(peak, *kernel_rss_mb(), 0.0)
            time.sleep(0.5)
    rows = [Row("4 users", f"visitor {name}: explanation ready", seconds, 1) for name, seconds in waits.items()]
    rows.append(Row("4 users", "largest kernel RSS (MB)", 0.0, 1, peak, target="≤ 1500 MB"))
    for row in rows:
        print(f"{row.case:40s} {row.median_s:8.1f} s  {row.peak_mb or ''}", flush=True)
    return rows
