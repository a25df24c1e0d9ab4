"""The Voila app in a real browser: Debian's Chromium driven by Playwright against a Voila server
started here on a free port. Screenshots go to test-artifacts/ for a person to look at."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from lrp_widgets.app import running_app

from .conftest import IMAGES

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

CYTOSCAPE = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  if (!host) return null;
  const cy = host._cyreg.cy, box = host.getBoundingClientRect();
  return {width: cy.width(), height: cy.height(), left: box.left, top: box.top,
          nodes: cy.nodes().map(n => ({id: n.id(), classes: n.classes().join(' '), label: n.data('label'),
                                       box: n.renderedBoundingBox(),
                                       x: n.renderedPosition().x, y: n.renderedPosition().y})),
          paths: cy.edges('.path').length};
}"""


@pytest.fixture(scope="module")
def server():
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_IMAGES": str(IMAGES)}
    with open(ARTIFACTS / "voila.log", "w") as log, running_app(env, log=log) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        page.goto(server, timeout=120_000)
        page.wait_for_selector(".lrp-explorer", timeout=120_000)
        wait_until(page, lambda: (graph(page) or {}).get("paths", 0) > 0, "the graph with its paths")
        yield page
        browser.close()


def wait_until(page, condition, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        page.wait_for_timeout(250)
    page.screenshot(path=str(ARTIFACTS / "timeout.png"))
    pytest.fail(f"timed out waiting for {what}")


def graph(page):
    return page.evaluate(CYTOSCAPE)


def figure_png(page, title: str) -> str:
    """The PNG (data URL) a bqplot picture figure shows, found by its title's start."""
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


def test_app_renders_every_view(page):
    page.screenshot(path=str(ARTIFACTS / "app.png"))
    shown = graph(page)
    assert len(shown["nodes"]) == 8 * 15 + 1 + 16  # nodes and column headers
    for node in shown["nodes"]:
        box = node["box"]
        assert box["x1"] >= 0 and box["y1"] >= 0 and box["x2"] <= shown["width"] and box["y2"] <= shown["height"], node
    for title in ("relevance", "activation", "deconvolution", "neuron relevance"):
        assert figure_png(page, title), title
    assert page.locator(".lrp-untrained").is_visible()
    assert page.locator(".widget-slider").first.is_visible()
    assert page.locator(".bqplot .bar").count() == 5  # the top-5 class chart
    assert page.get_by_text("threshold sweep").first.is_visible()


def test_moving_the_slider_changes_the_graph_and_the_heatmap(page):
    wait_until(page, lambda: "optimal α" in page.inner_text(".lrp-explorer"), "the sweep")
    before_nodes, before_png = graph(page)["nodes"], figure_png(page, "relevance")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(6):
        handle.press("ArrowLeft")
    wait_until(page, lambda: figure_png(page, "relevance") != before_png, "the heatmap to change")
    after = graph(page)["nodes"]
    assert [(n["classes"], n["label"]) for n in after] != [(n["classes"], n["label"]) for n in before_nodes]
    page.screenshot(path=str(ARTIFACTS / "slider.png"))


def test_clicking_a_graph_node_updates_the_deconvolution(page):
    before = figure_png(page, "deconvolution")
    page.wait_for_timeout(1000)  # let the graph settle after the last update
    shown = graph(page)
    node = next(n for n in shown["nodes"] if n["id"].startswith("features.26:"))
    page.mouse.move(shown["left"] + node["x"], shown["top"] + node["y"])
    page.wait_for_timeout(300)
    page.mouse.down()
    page.wait_for_timeout(100)
    page.mouse.up()
    layer, index = node["id"].split(":")
    wait_until(page, lambda: f"selected: {layer} neuron {index}" in page.inner_text(".lrp-explorer"),
               "the deconv label")
    wait_until(page, lambda: figure_png(page, "deconvolution") != before, "the deconvolution image")
    page.screenshot(path=str(ARTIFACTS / "deconv.png"))


def test_choosing_another_class_updates_the_relevance_heatmap(page):
    before = figure_png(page, "relevance")
    select = page.locator("select").filter(has=page.locator("option", has_text="%")).first
    options = select.locator("option").all_inner_texts()
    select.select_option(label=options[2])
    wait_until(page, lambda: figure_png(page, "relevance") != before, "the new class's heatmap")
    page.screenshot(path=str(ARTIFACTS / "class.png"))


def test_a_bad_upload_shows_an_error_and_the_app_keeps_working(page, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a picture")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="upload").click()
    chooser.value.set_files(str(bad))
    wait_until(page, lambda: page.locator(".lrp-error").count() > 0, "the error message")
    assert "holiday.jpg" in page.inner_text(".lrp-error") or "not an image" in page.inner_text(".lrp-error")
    page.screenshot(path=str(ARTIFACTS / "bad-upload.png"))
    before = figure_png(page, "relevance")
    page.get_by_role("button", name="zebra").click()
    wait_until(page, lambda: figure_png(page, "relevance") != before and page.locator(".lrp-error").count() == 0
               and page.locator(".lrp-busy").count() == 0, "the zebra explanation")
    page.screenshot(path=str(ARTIFACTS / "zebra.png"))


def test_no_console_errors_but_the_blocked_font(page):
    unexpected = [e for e in page.console_errors if "ERR_NAME_NOT_RESOLVED" not in e]
    assert unexpected == []
