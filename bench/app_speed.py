"""Issue 5: the Voila app in headless Chromium — from the page request to the first relevance heatmap
visible (weights cached; here: random weights), and from a slider move to the updated heatmap visible."""
from __future__ import annotations

import statistics
import time

from lrp_widgets.app import running_app
from tests.test_app_browser import alpha_handle, chromium

from .common import Row
from .models import IMAGES

BLANK_TITLE = "relevance"


def figure_png(page, title: str) -> str | None:
    """The address of the picture a bqplot figure shows (it changes with every new picture)."""
    return page.evaluate("""(title) => {
      for (const fig of document.querySelectorAll('.bqplot')) {
        const t = fig.querySelector('.mainheading');
        if (t && t.textContent.startsWith(title)) {
          const img = fig.querySelector('image');
          return img ? (img.getAttribute('href') || img.getAttribute('xlink:href')) : null;
        }
      }
      return null;
    }""", title)


def run(repeat: int = 5, threads: int = 2, device: str = "cpu") -> list[Row]:
    env = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_IMAGES": str(IMAGES), "OMP_NUM_THREADS": str(threads)}
    first, moves = [], []
    with running_app(env) as url, chromium() as browser:
        for _ in range(min(repeat, 3)):
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            start = time.perf_counter()
            page.goto(url, timeout=120_000)
            page.wait_for_function("""() => [...document.querySelectorAll('.bqplot .mainheading')]
                .some(t => t.textContent.startsWith('relevance:'))""", timeout=120_000)
            first.append(time.perf_counter() - start)
            page.wait_for_function("() => document.body.innerText.includes('optimal α = ')", timeout=120_000)
            handle = alpha_handle(page)
            handle.focus()
            for _ in range(max(repeat, 10)):
                before = figure_png(page, BLANK_TITLE)
                start = time.perf_counter()
                handle.press("ArrowLeft" if len(moves) % 12 < 6 else "ArrowRight")
                while figure_png(page, BLANK_TITLE) == before and time.perf_counter() - start < 10:
                    page.wait_for_timeout(5)
                moves.append(time.perf_counter() - start)
            page.close()
    rows = [Row("app", "page request → first heatmap", statistics.median(first), len(first), target="≤ 8 s"),
            Row("app", "slider move → heatmap visible", statistics.median(moves), len(moves), target="≤ 150 ms")]
    for row in rows:
        print(f"{row.case:32s} {row.median_s * 1000:8.1f} ms", flush=True)
    return rows
