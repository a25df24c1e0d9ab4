"""Issue 11: a Binder session reproduced (tests/binder.py): the CPU-only Binder venv's app in a cgroup-v1
memory group, driven in Chromium.

1. The teaching session in Binder's 2 GiB: peak anonymous memory of server and kernel, failcnt, OOM
   kills, seconds per step.
2. Load, two reloads and an explanation in 2 GiB: OOM kills.
3. 20 visitors on one server (a group too large to kill anything): pages opened in waves of 1, 4, 5 and
   10; the group's anonymous memory once 1, 5, 10 and 20 kernels show their first explanation, and the
   memory each additional kernel costs.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.binder import (
    BINDER_LIMIT,
    STEP_TIMEOUT,
    GiB,
    MiB,
    binder_app,
    memory_group,
    new_page,
    reload_session,
    rotated_copy,
    settled,
    teaching_session,
)
from tests.test_app_browser import ARTIFACTS, chromium, views

from .common import Row

WAVES = (1, 4, 5, 10)  # visitors opened at once: 1, 5, 10, 20 in all
VISITOR_LIMIT = 20 * GiB


def in_binder(browser, session, *args) -> tuple[dict[str, float], dict[str, float], str]:
    """``session(page, url, *args, group)`` on a fresh app in a fresh 2 GiB group: seconds per step, the
    group's figures and what went wrong ('' if nothing)."""
    seconds, error = {}, ""
    with memory_group(BINDER_LIMIT) as group:
        with binder_app(group, log=f"binder-bench-{session.__name__}") as url:
            page = new_page(browser)
            try:
                seconds = session(page, url, *args, group)
            except (AssertionError, pytest.fail.Exception) as failure:  # an OOM kill or a step that never ended
                error = str(failure).splitlines()[0]
            page.context.close()
        return seconds, group.figures(), error


def binder_rows(case: str, seconds: dict[str, float], figures: dict[str, float], error: str, target: str) -> list[Row]:
    what = f"{case} in 2 GiB: {figures['oom_kills']} OOM kills, failcnt {figures['failcnt']}"
    rows = [Row("binder", what + (f" — {error}" if error else ""), sum(seconds.values()), 1, figures["peak_anon_mib"],
                target=target, extra={**figures, "steps_s": seconds, "error": error})]
    rows += [Row("binder", f"{case}: {step}", s, 1) for step, s in seconds.items()]
    return rows


def visitor_limit() -> int:
    """The visitors' group limit: 20 GiB, or less where the machine has less to spare (the group's OOM
    killer then strikes before the machine's)."""
    available = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    return min(VISITOR_LIMIT, available - 4 * GiB)


def visitors(browser) -> list[Row]:
    """Pages opened in ``WAVES``; each wave waits until every page shows the castle's explanation. Stops at
    an OOM kill or a wave that never finishes (its row says so; screenshots of the pages that did not:
    test-artifacts/binder-visitor-stuck-N.png)."""
    limit, rows, pages = visitor_limit(), [], []
    for old in ARTIFACTS.glob("binder-visitor-stuck-*.png"):
        old.unlink()
    with memory_group(limit) as group, binder_app(group, extra_args=("--max-kernels", "0"),
                                                  log="binder-bench-visitors") as url:
        for wave in WAVES:
            start = time.perf_counter()
            pending = [new_page(browser) for _ in range(wave)]
            pages += pending
            for page in pending:
                page.goto(url, wait_until="commit")
            while pending and not group.oom_kills and time.perf_counter() - start < STEP_TIMEOUT + 60 * wave:
                time.sleep(1)
                pending = [page for page in pending if settled(page) is None or views(page)["image"] != "image: castle"]
            for number, page in enumerate(pending):
                page.screenshot(path=str(ARTIFACTS / f"binder-visitor-stuck-{number}.png"))
            done = f"{len(pages)} visitors" + (f": {len(pending)} never showed an explanation" if pending else "")
            rows.append(Row("binder", f"{done}: anonymous memory after the first explanations",
                            time.perf_counter() - start, 1, group.rss_bytes / MiB,
                            extra={"visitors": len(pages), "kernels": len(group.kernels()), "limit_mib": limit / MiB,
                                   **group.figures()}))
            print(f"{rows[-1].case}: {rows[-1].peak_mb:.0f} MiB, {rows[-1].median_s:.0f} s", flush=True)
            if pending:
                break
        for page in pages:
            page.context.close()
    if len(rows) > 1:
        first, last = rows[0].extra["visitors"], rows[-1].extra["visitors"]
        rows.append(Row("binder", f"per additional kernel ({first} → {last} visitors)", 0.0, 1,
                        (rows[-1].peak_mb - rows[0].peak_mb) / (last - first), target="≤ 500 MB"))
    return rows


def run(repeat: int = 1, threads: int = 2, device: str = "cpu") -> list[Row]:
    """One run of each (the sessions take minutes); ``threads`` and ``device`` do not apply: Binder is CPU-only."""
    with tempfile.TemporaryDirectory() as folder, chromium() as browser:
        rows = binder_rows("teaching session", *in_binder(browser, teaching_session, rotated_copy(Path(folder))),
                           target="≤ 1.2 GiB anon, no OOM")
        rows += binder_rows("load + 2 reloads + explanation", *in_binder(browser, reload_session), target="no OOM")
        rows += visitors(browser)
    for row in rows:
        print(f"{row.case:90.90s} {row.median_s:7.1f} s {row.peak_mb or 0:7.0f} MiB  {row.target}", flush=True)
    return rows
