"""A Binder session reproduced here (issue 11): the app of the CPU-only Binder venv inside a 2 GiB
cgroup-v1 memory group, driven in Chromium through a teaching session and through reloads. The figures
(peak anonymous memory of server and kernels, failcnt, page-cache usage) are printed and reported as a
warning; screenshots go to test-artifacts/binder-*.png. Skipped, saying why, where no memory group can
be made (no cgroup v1, not root)."""
from __future__ import annotations

import warnings
from contextlib import ExitStack
from pathlib import Path

import pytest

from .binder import (
    BINDER_LIMIT,
    VENV,
    CgroupUnavailable,
    GiB,
    MiB,
    binder_app,
    listening,
    memory_group,
    model_switches,
    new_page,
    reload_session,
    rotated_copy,
    teaching_session,
    torch_libraries,
)
from .test_app_browser import CHROMIUM, chromium, views

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
#: issue 11's target for the anonymous memory of server and kernel in a teaching session
ANON_BUDGET = 1.2 * GiB


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def group():
    """A 2 GiB memory group (the Binder venv is built on first use, ~1 min)."""
    with ExitStack() as stack:
        try:
            group = stack.enter_context(memory_group(BINDER_LIMIT))
        except CgroupUnavailable as why:
            warnings.warn(f"Binder session not reproduced: {why}")
            pytest.skip(str(why))
        yield group


def report(what: str, group, seconds: dict[str, float]) -> None:
    """Print the figures and repeat them as a warning (shown in pytest's summary without -s)."""
    steps = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    message = f"{what} in a {BINDER_LIMIT / GiB:g} GiB group: {group.summary()}; steps: {steps}"
    print(message)
    warnings.warn(message)


def assert_binder_torch(group) -> None:
    """Every kernel runs the CPU-only torch of the Binder venv."""
    kernels = group.kernels()
    assert kernels, "no kernel in the group"
    for pid in kernels:
        libraries = torch_libraries(pid)
        assert libraries and all(path.startswith(str(VENV)) for path in libraries), libraries
        assert not any("cuda" in path for path in libraries), libraries


def test_a_teaching_session_fits_binder(group, browser, tmp_path):
    with binder_app(group, log="binder-app-teaching") as url:
        page = new_page(browser)
        seconds = teaching_session(page, url, rotated_copy(tmp_path), group)
        assert_binder_torch(group)
        assert listening(url) and any("voila" in command for command in group.commands().values()), \
            "the server died"
        page.context.close()
    report("teaching session", group, seconds)
    assert group.oom_kills == 0, group.summary()
    assert group.peak_rss_bytes <= ANON_BUDGET, (
        f"peak anonymous memory {group.peak_rss_bytes / MiB:.0f} MiB over the {ANON_BUDGET / MiB:.0f} MiB budget")


def test_reloads_fit_binder(group, browser):
    with binder_app(group, log="binder-app-reload") as url:
        page = new_page(browser)
        seconds = reload_session(page, url, group)
        shown = views(page)
        page.context.close()
    report("load, two reloads and an explanation", group, seconds)
    assert group.oom_kills == 0, group.summary()
    assert shown["image"] == "image: barn" and not shown["busy"] and "optimal α" in shown["text"], shown


#: six model switches (random weights: every model's parameters are anonymous memory) peaked at 1826 MiB with
#: 79,331 limit hits when the session kept every model; it keeps only what its budget allows now (1542-1646 MiB
#: measured in four runs). Issue 21's goal of 1.2 GiB is not reached yet.
MODEL_SWITCH_BUDGET = 1.75 * GiB


def test_six_model_switches_fit_binder(group, browser):
    """Issue 21: the session keeps only the models its memory budget allows."""
    with binder_app(group, log="binder-app-models") as url:
        page = new_page(browser)
        seconds = model_switches(page, url, group)
        page.context.close()
    report("six model switches and a class", group, seconds)
    assert group.oom_kills == 0, group.summary()
    assert group.peak_rss_bytes <= MODEL_SWITCH_BUDGET, (
        f"peak anonymous memory {group.peak_rss_bytes / MiB:.0f} MiB over {MODEL_SWITCH_BUDGET / MiB:.0f} MiB")
