"""The Voila app in a real browser: Debian's Chromium driven by Playwright against a Voila server
started here on a free port. Every test gets its own page (so its own kernel and explorer) and waits for
the app to be idle before acting; closing the page shuts its kernel down. Screenshots go to
test-artifacts/ for a person to look at."""
from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrp_widgets.analysis.render import png_bytes
from lrp_widgets.app import running_app
from lrp_widgets.views.common import BLANK

from .conftest import IMAGES

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
TIMEOUT = 120  # seconds: an explanation of VGG16 takes a few seconds on two cores, a page load ~20 s
HIGHLIGHT = "rgb(214, 39, 40)"  # #d62728, the selected bar's fill

CYTOSCAPE = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  if (!host) return null;
  const cy = host._cyreg.cy, box = host.getBoundingClientRect();
  return {width: cy.width(), height: cy.height(), left: box.left, top: box.top, zoom: cy.zoom(),
          nodes: cy.nodes().map(n => ({id: n.data('neuron') || n.id(), classes: n.classes().join(' '), label: n.data('label'),
                                       box: n.renderedBoundingBox(),
                                       x: n.renderedPosition().x, y: n.renderedPosition().y})),
          paths: cy.edges('.path').length};
}"""

#: The graph's elements as the browser holds them: which builds their ids come from, nodes without our ids,
#: edges whose source or target is missing.
ELEMENTS = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  const cy = host._cyreg.cy;
  return {builds: [...new Set(cy.elements().map(e => e.id().split('/')[0]))],
          nodes: cy.nodes().length, edges: cy.edges().length,
          unnamed: cy.nodes().filter(n => !n.id().includes('/')).length,
          dangling: cy.edges().filter(e => e.source().empty() || e.target().empty()).length};
}"""

#: The graph's label sizes on screen (px).
FONTS = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  return host._cyreg.cy.nodes().map(n => parseFloat(n.renderedStyle('font-size')));
}"""

#: What every view shows, read from the page (texts with non-breaking spaces made plain).
VIEWS = """() => {
  const plain = s => (s || '').replace(/\\u00a0/g, ' ').trim();
  const texts = sel => [...document.querySelectorAll(sel)].map(el => plain(el.innerText));
  const select = [...document.querySelectorAll('select')].find(s => [...s.options].some(o => o.text.includes('%')));
  const bars = [...document.querySelectorAll('.bqplot .bar')]
    .sort((a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left);
  return {
    captions: texts('.lrp-caption'),
    legend: texts('.lrp-graph-legend')[0] || '',
    options: select ? [...select.options].map(o => plain(o.text)) : [],
    chosen: select && select.selectedIndex >= 0 ? plain(select.options[select.selectedIndex].text) : null,
    bars: bars.length,
    highlighted: bars.map((b, i) => getComputedStyle(b).fill === 'HIGHLIGHT' ? i : -1).filter(i => i >= 0),
    image: texts('.lrp-image-name')[0] || '',
    error: texts('.lrp-error').join(' '),
    busy: document.querySelectorAll('.lrp-busy').length > 0,
    examples: [...document.querySelectorAll('.widget-toggle-buttons .widget-toggle-button')]
      .map(b => ({label: plain(b.innerText), active: b.classList.contains('mod-active')})),
    text: plain((document.querySelector('.lrp-explorer') || {}).innerText),
  };
}""".replace("HIGHLIGHT", HIGHLIGHT)

#: Records every heatmap caption, graph legend and untrained-model banner the page ever shows (read back with SEEN).
RECORD = """() => {
  window.__seen = new Set();
  const note = () => document.querySelectorAll('.lrp-caption, .lrp-graph-legend, .lrp-untrained')
    .forEach(el => window.__seen.add(el.innerText.replace(/\\u00a0/g, ' ').trim()));
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
  note();
}"""
SEEN = "() => [...window.__seen]"

#: Records, at every change of the page, each view's class shown and whether it is dimmed (read back with FRAMES).
RECORD_VIEWS = """() => {
  window.__frames = [];
  const plain = s => (s || '').replace(/\\u00a0/g, ' ').trim();
  const text = el => [...el.children].filter(c => !c.classList.contains('lrp-note'))
    .map(c => plain(c.innerText)).join(' | ');
  const snap = () => {
    const frame = {t: performance.now(), views: {}};
    for (const el of document.querySelectorAll('.lrp-view')) {
      const name = [...el.classList].find(c => c.startsWith('lrp-') && !['lrp-view', 'lrp-stale'].includes(c));
      const note = el.querySelector(':scope > .lrp-note');
      frame.views[name] = {stale: el.classList.contains('lrp-stale'), text: text(el),
                           note: note ? plain(note.innerText) : ''};
    }
    window.__frames.push(frame);
  };
  new MutationObserver(snap).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true, attributeFilter: ['class']});
  snap();
}"""
FRAMES = "() => window.__frames"

PICTURE = """async (title) => {
  for (const fig of document.querySelectorAll('.bqplot')) {
    const t = fig.querySelector('.mainheading');
    if (t && t.textContent.startsWith(title)) {
      const img = fig.querySelector('image');
      const url = img && (img.getAttribute('href') || img.getAttribute('xlink:href'));
      if (!url) return null;
      const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
      let s = '';
      for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
      return btoa(s);
    }
  }
  return null;
}"""


# the server, the browser, one page per test ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_IMAGES": str(IMAGES)}
    # room for every test's kernel even if a closed page's kernel is not shut down at once
    with open(ARTIFACTS / "voila.log", "w") as log, running_app(env, log=log, max_kernels=32) as url:
        yield url


@contextmanager
def chromium() -> Iterator:
    """Debian's Chromium driven by Playwright (without the background networking this machine refuses)."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(request, server, browser):
    """A fresh page of the app (1440×1000, or the (width, height) of an indirect parameter), idle with the
    castle's explanation complete; no console errors but the blocked font when the test is over."""
    width, height = getattr(request, "param", (1440, 1000))
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.sent = []  # what the page sends its kernel
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: page.sent.append(
        frame if isinstance(frame, bytes) else frame.encode())))
    page.goto(server, timeout=TIMEOUT * 1000)
    page.wait_for_selector(".lrp-explorer", timeout=TIMEOUT * 1000)
    wait_idle(page, "the first explanation")
    yield page
    errors = console_errors(page)
    page.goto("about:blank")  # leaving the page: Voila's beforeunload handler shuts its kernel down
    context.close()
    assert errors == [], "console errors"


def console_errors(page) -> list[str]:
    return [e for e in page.console_errors if "ERR_NAME_NOT_RESOLVED" not in e]


# reading the page --------------------------------------------------------------------------------------
def wait_until(page, condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if console_errors(page):  # e.g. a widget update the browser could not apply: fail now, not at the timeout
            shot(page, "console-error")
            pytest.fail(f"console errors while waiting for {what}: {console_errors(page)}")
        page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / "timeout.png"))
    pytest.fail(f"timed out waiting for {what}; the page shows {views(page)}")


def graph(page):
    return page.evaluate(CYTOSCAPE)


def views(page) -> dict:
    return page.evaluate(VIEWS)


def picture(page, title: str) -> bytes | None:
    """The PNG a bqplot picture figure shows, found by its title's start."""
    data = page.evaluate(PICTURE, title)
    return None if data is None else base64.b64decode(data)


PLACEHOLDER = png_bytes(BLANK)


def is_placeholder(png: bytes) -> bool:
    """The blank light-grey placeholder (or any picture of one colour)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return png == PLACEHOLDER or bool((pixels == pixels[0, 0]).all())


def heatmap(page, title: str) -> bytes:
    """The PNG of a heatmap figure, asserting it is a real picture and not the placeholder."""
    png = picture(page, title)
    assert png is not None, f"no {title} figure"
    assert not is_placeholder(png), f"the {title} figure shows the blank placeholder"
    return png


def class_of(text: str | None) -> str | None:
    """'castle (483)' from a caption, legend line or dropdown option."""
    found = re.search(r"(?:class |^)(.+?) \((\d+)\)", text or "")
    return f"{found.group(1)} ({found.group(2)})" if found else None


def classes_shown(page) -> dict[str, str | None]:
    """The class each view shows."""
    shown = views(page)
    captions = shown["captions"] + [None, None]
    highlighted = shown["highlighted"]
    return {"relevance caption": class_of(captions[0]), "activation caption": class_of(captions[1]),
            "graph legend": class_of(shown["legend"]), "dropdown": class_of(shown["chosen"]),
            "highlighted bar": (class_of(shown["options"][highlighted[0]]) if len(highlighted) == 1 else
                                f"{len(highlighted)} bars highlighted")}


def bar_class(page, index: int) -> str:
    """The class of the ``index``-th bar (the dropdown lists the top-5 in the bars' order)."""
    shown = views(page)
    assert shown["bars"] == 5 and len(shown["options"]) >= 5, shown
    return class_of(shown["options"][index])


def idle(page) -> bool:
    """The app finished: nothing working, the sweep shown, both captions and the graph's paths drawn."""
    shown = views(page)
    vanishing = "no paths: the relevance vanishes" in shown["legend"]  # nothing to draw: said in words
    return (not shown["busy"] and ("optimal α = " in shown["text"] or vanishing) and len(shown["captions"]) == 2
            and "computing" not in " ".join(shown["captions"]) and ((graph(page) or {}).get("paths", 0) > 0 or vanishing))


def wait_idle(page, what: str) -> None:
    wait_until(page, lambda: idle(page), what)


def wait_for_class(page, name: str, what: str) -> None:
    """Until every view shows class ``name`` and the app is idle."""
    wait_until(page, lambda: idle(page) and set(classes_shown(page).values()) == {name}, what)


def class_node(page) -> dict:
    """The graph's class node: the one node of its last column."""
    nodes = [n for n in graph(page)["nodes"] if "header" not in n["classes"]]
    last = max(n["x"] for n in nodes)
    column = [n for n in nodes if abs(n["x"] - last) < 1]
    assert len(column) == 1, column
    return column[0]


def inside(shown: dict, node: dict) -> bool:
    box = node["box"]
    return box["x1"] >= 0 and box["y1"] >= 0 and box["x2"] <= shown["width"] and box["y2"] <= shown["height"]


def alpha_handle(page):
    """The α slider's handle (each heatmap has an opacity slider too)."""
    return page.locator(".widget-hslider").filter(has=page.locator("label", has_text="α")).locator(".noUi-handle")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def upload(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="upload").click()
    chooser.value.set_files(str(path))


def example_button(page, name: str):
    return page.locator(".widget-toggle-buttons .widget-toggle-button", has_text=name)


def pick_model(page, family: str, variant: str) -> None:
    """Choose a family, then at once one of its variants (the variants arrive from the kernel)."""
    picker = page.locator(".lrp-model-picker select")
    picker.nth(0).select_option(label=family)
    picker.nth(1).select_option(label=variant)


def banner(page) -> str:
    return page.locator(".lrp-untrained").inner_text() if page.locator(".lrp-untrained").count() else ""


def headers(page) -> list[str]:
    """The graph's column labels, input side first (without the α layer's count)."""
    nodes = sorted((n for n in graph(page)["nodes"] if "header" in n["classes"]), key=lambda n: n["x"])
    return [n["label"].split("\n")[0] for n in nodes]


def alpha_header(page) -> str:
    """The label of the α layer's column header ("" while there is none)."""
    return next((n["label"] for n in graph(page)["nodes"] if "alpha-layer" in n["classes"]), "")


def zoom_in_until(page, done, what: str) -> None:
    """Turn the wheel (at the pointer) a step at a time until ``done()``; at most 20 steps."""
    for _ in range(20):
        if done():
            return
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(150)
    pytest.fail(f"zooming in 20 steps did not make {what}")


def click_node(page, node: dict) -> None:
    shown = graph(page)
    page.mouse.move(shown["left"] + node["x"], shown["top"] + node["y"])
    page.wait_for_timeout(300)  # cytoscape needs the pointer over the node before the press
    page.mouse.down()
    page.wait_for_timeout(100)
    page.mouse.up()


# the tests ---------------------------------------------------------------------------------------------
def test_app_renders_every_view(page):
    shot(page, "app")
    shown = graph(page)
    assert len(shown["nodes"]) == 8 * 15 + 1 + 16  # nodes and column headers
    for node in shown["nodes"]:
        assert inside(shown, node), node
    for title in ("relevance", "activation"):
        heatmap(page, title)
    for title in ("deconvolution", "neuron relevance"):  # no neuron selected yet
        assert picture(page, title) == PLACEHOLDER, title
    assert page.get_by_text("click a neuron in the graph to see its deconvolution").is_visible()
    assert page.locator(".lrp-untrained").is_visible()
    assert page.locator(".widget-slider").first.is_visible()
    assert page.locator(".bqplot .bar").count() == 5  # the top-5 class chart
    assert page.get_by_text("threshold sweep").first.is_visible()
    top1 = bar_class(page, 0)
    assert set(classes_shown(page).values()) == {top1}, classes_shown(page)
    assert class_node(page)["label"] == top1.rsplit(" (", 1)[0]
    state = views(page)
    assert state["image"] == "image: castle"
    assert [b["label"] for b in state["examples"] if b["active"]] == ["castle"]
    assert state["error"] == ""
    # the page asked its kernel to send every widget's state again once it was on screen (Explorer.resend)
    assert any(b'"click"' in frame for frame in page.sent), "the page did not ask for a resync"


#: The top of the relevance heatmap's view at every change of the page, once every view is built (its six
#: figures and the graph's canvas: the page assembles itself in a fraction of a second before that).
RECORD_TOPS = """() => {
  window.__tops = [];
  const note = () => {
    const view = document.querySelector('.lrp-relevanceheatmap');
    const built = document.querySelectorAll('.bqplot').length >= 6 &&
      [...document.querySelectorAll('div')].some(el => el._cyreg && el._cyreg.cy);
    if (view && built) window.__tops.push(Math.round(view.getBoundingClientRect().top));
  };
  new MutationObserver(note).observe(document, {subtree: true, childList: true, characterData: true,
                                                attributes: true});
}"""


@pytest.mark.parametrize("size", [(1280, 720)])
def test_nothing_moves_while_the_page_loads_the_banner_included(server, browser, size):
    """From the moment every view is built until the first explanation is complete, the heatmaps stay where
    they are: the untrained-weights banner has its place before the first result."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    page.console_errors = []
    page.add_init_script(f"document.addEventListener('DOMContentLoaded', {RECORD_TOPS})")
    page.goto(server, timeout=TIMEOUT * 1000)
    page.wait_for_selector(".lrp-explorer", timeout=TIMEOUT * 1000)
    wait_idle(page, "the first explanation")
    tops, shown = page.evaluate("() => window.__tops"), banner(page)
    shot(page, "loaded")
    page.goto("about:blank")
    context.close()
    assert "random (untrained) weights" in shown
    assert len(tops) > 10 and len(set(tops)) == 1, sorted(set(tops))


def test_moving_the_slider_changes_the_graph_and_the_heatmap(page):
    before_nodes, before_png = graph(page)["nodes"], heatmap(page, "relevance")
    assert "the neurons α = 1 keeps at conv5_3" in views(page)["captions"][0]
    handle = alpha_handle(page)
    handle.focus()
    for _ in range(6):  # 1 → -0.5 in steps of 0.25
        handle.press("ArrowLeft")
    wait_until(page, lambda: idle(page) and "the neurons α = -0.5 keeps at conv5_3" in views(page)["captions"][0],
               "the caption for α = -0.5")
    shot(page, "slider")
    assert heatmap(page, "relevance") != before_png
    after = graph(page)["nodes"]
    assert [(n["classes"], n["label"]) for n in after] != [(n["classes"], n["label"]) for n in before_nodes]
    assert "α = -0.5" in views(page)["legend"]


def test_clicking_a_graph_node_updates_the_deconvolution(page):
    assert picture(page, "deconvolution") == PLACEHOLDER
    top1 = bar_class(page, 0)
    node = next(n for n in graph(page)["nodes"] if n["id"].startswith("features.26:"))
    click_node(page, node)
    layer, index = node["id"].split(":")
    wait_until(page, lambda: f"selected: {layer} (conv5_2) neuron {index}" in views(page)["text"] and idle(page),
               "the deconv label")
    assert f"for class {top1}" in views(page)["text"]
    heatmap(page, "deconvolution")
    heatmap(page, "neuron relevance")
    assert "selected-neuron" in next(n for n in graph(page)["nodes"] if n["id"] == node["id"])["classes"]
    shot(page, "deconv")


def test_choosing_another_class_updates_the_relevance_heatmap(page):
    before = heatmap(page, "relevance")
    third = bar_class(page, 2)
    select = page.locator("select").filter(has=page.locator("option", has_text="%")).first
    select.select_option(index=2)
    wait_for_class(page, third, f"every view to show {third}")
    assert heatmap(page, "relevance") != before
    shot(page, "class")


def test_a_bad_upload_shows_an_error_and_the_app_keeps_working(page, tmp_path):
    before = heatmap(page, "relevance")
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a picture")
    upload(page, bad)
    wait_until(page, lambda: views(page)["error"] != "", "the error message")
    state = views(page)
    assert "holiday.jpg is not an image we can read (not a known image format)" in state["error"]
    assert state["image"] == "image: castle"  # the castle stays on screen
    assert "castle" in [b["label"] for b in state["examples"] if b["active"]]
    shot(page, "bad-upload")
    example_button(page, "zebra").click()
    wait_until(page, lambda: idle(page) and views(page)["image"] == "image: zebra"
               and heatmap(page, "relevance") != before, "the zebra explanation")
    state = views(page)
    assert state["error"] == ""
    assert [b["label"] for b in state["examples"] if b["active"]] == ["zebra"]
    shot(page, "zebra")


def noise_png(path: Path, side: int) -> Path:
    """A PNG of random pixels (it does not compress: about 3·side² bytes)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_a_15_mb_upload_is_explained_and_a_30_mb_one_refused_in_words(page, tmp_path):
    """An upload travels to the kernel in one websocket message: one over the server's limit used to close the
    connection without a word."""
    big = noise_png(tmp_path / "noise-15mb.png", 2300)
    assert 14 * 2**20 < big.stat().st_size < 20 * 2**20
    before = heatmap(page, "relevance")
    upload(page, big)
    wait_until(page, lambda: idle(page) and views(page)["image"] == f"image: {big.name}"
               and heatmap(page, "relevance") != before, "the 15 MB upload's explanation")
    huge = noise_png(tmp_path / "noise-30mb.png", 3300)
    upload(page, huge)
    wait_until(page, lambda: views(page)["error"] != "", "the message on the 30 MB upload")
    assert f"{huge.name} is {huge.stat().st_size / 2**20:.1f} MB, over the 20.0 MB limit" in views(page)["error"]
    assert views(page)["image"] == f"image: {big.name}"
    shot(page, "big-uploads")


def test_the_hovered_neurons_readout_goes_with_the_graph_it_was_read_from(page):
    """The mouse rests on a neuron while another class is chosen with the keyboard: its old relevance must not
    stay beside the new graph."""
    shown = graph(page)
    node = next(n for n in shown["nodes"] if "header" not in n["classes"])
    page.mouse.move(shown["left"] + node["x"], shown["top"] + node["y"])
    wait_until(page, lambda: "relevance" in hover(page), "the hovered neuron's readout")
    second = bar_class(page, 1)
    page.locator("select").filter(has=page.locator("option", has_text="%")).first.select_option(index=1)
    wait_for_class(page, second, f"every view to show the 2nd class {second}")
    assert hover(page).startswith("hover a neuron for its layer"), hover(page)


def hover(page) -> str:
    return page.locator(".lrp-hover").inner_text().replace("\xa0", " ")


#: How much of the error message is hidden (px): its height beyond what its line shows.
ERROR_HIDDEN = """() => {
  const error = document.querySelector('.lrp-error');
  const line = error.closest('.widget-hbox');
  return Math.max(0, error.getBoundingClientRect().bottom - line.getBoundingClientRect().bottom,
                  error.scrollHeight - error.clientHeight);
}"""


@pytest.mark.parametrize("page", [(1280, 720)], indirect=True)
def test_a_long_error_is_shown_whole(page, tmp_path):
    bad = tmp_path / f"{'a-holiday-picture-with-a-long-name-' * 6}.jpg"
    bad.write_text("this is not a picture")
    upload(page, bad)
    wait_until(page, lambda: views(page)["error"] != "", "the error message")
    assert "not an image we can read (not a known image format)" in views(page)["error"]
    assert page.locator(".lrp-error").bounding_box()["height"] > 30  # it takes two lines here
    assert page.evaluate(ERROR_HIDDEN) == 0
    shot(page, "long-error")


def test_alpha_is_explained_on_screen(page):
    meaning = page.locator(".lrp-alpha-meaning")
    assert meaning.is_visible()
    text = meaning.inner_text().replace("\xa0", " ")
    assert "What is α?" in text and "activation minus its relevance" in text and "μ − α·σ" in text
    assert "at α = −2 even highly relevant neurons are faded" in text


def test_alpha_links_to_the_tutorials_section_on_alpha(page):
    """α's two sentences are titled by a link to the tutorial's section on α (the notebook beside the app's, at the
    section's heading: the id Voila's and JupyterLab's Markdown give it)."""
    link = page.locator(".lrp-alpha-meaning a")
    assert link.is_visible() and link.inner_text() == "What is α?"
    path, anchor = link.get_attribute("href").split("#")
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / path).read_text())
    headings = [line.lstrip("#").strip() for cell in notebook["cells"] if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("#")]
    assert anchor in [heading.replace(" ", "-") for heading in headings], headings
    assert link.get_attribute("target") == "_blank"
    page.locator(".lrp-alpha-meaning").scroll_into_view_if_needed()
    shot(page, "alpha-link")


def test_an_untrained_mobilenet_says_its_relevance_vanishes_and_draws_no_paths(page):
    pick_model(page, "MobileNet", "mobilenet_v2")
    wait_until(page, lambda: idle(page) and all(" · mobilenet_v2:" in c for c in views(page)["captions"]),
               "MobileNet V2's explanation")
    notice = page.locator(".lrp-vanishing")
    assert notice.is_visible() and "the class score is" in notice.inner_text()
    assert graph(page)["paths"] == 0 and "optimal α = " not in views(page)["text"]
    shot(page, "mobilenet-vanishing")


def test_the_top1_bar_can_be_chosen_again(page):
    first, second = bar_class(page, 0), bar_class(page, 1)
    page.locator(".bqplot .bar").nth(1).click()
    wait_for_class(page, second, f"every view to show the 2nd class {second}")
    shot(page, "second-bar")
    page.locator(".bqplot .bar").nth(0).click()
    wait_for_class(page, first, f"every view to show the 1st class {first} again")
    assert views(page)["highlighted"] == [0]
    assert class_node(page)["label"] == first.rsplit(" (", 1)[0]
    shot(page, "first-bar-again")


#: Every text of the class chart (names, ticks, axis label, title) with its room to the figure's edges (px).
CHART_TEXTS = """() => {
  const figure = document.querySelector('.lrp-classselector .bqplot'), box = figure.getBoundingClientRect();
  return [...figure.querySelectorAll('text')].filter(t => t.textContent.trim() && t.getBoundingClientRect().width)
    .map(t => { const b = t.getBoundingClientRect();
                return {text: t.textContent, room: Math.min(b.left - box.left, box.right - b.right, b.top - box.top,
                                                             box.bottom - b.bottom)}; });
}"""


def test_a_class_is_chosen_by_its_name_and_the_charts_labels_are_whole(page):
    """A class of tiny probability has a bar too thin to hit: its name chooses it. Every label of the chart lies
    inside it with room to spare (another machine's font may be wider)."""
    fifth = bar_class(page, 4)
    index = fifth.rsplit(" ", 1)[1]  # "(246)"
    name = page.locator(".lrp-classselector svg text").filter(visible=True).filter(
        has_text=re.compile(re.escape(index) + "$")).bounding_box()
    page.mouse.click(name["x"] + name["width"] / 2, name["y"] + name["height"] / 2)
    wait_for_class(page, fifth, f"every view to show the 5th class {fifth}")
    assert views(page)["highlighted"] == [4]
    shot(page, "fifth-class-by-name")
    texts = page.evaluate(CHART_TEXTS)
    assert "probability" in [t["text"] for t in texts]
    assert [t for t in texts if t["room"] < 8] == [], texts


#: The colours of the graph's path edges (distinct, as the browser draws them) and of the legend's path key.
PATH_COLOURS = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  const plain = c => c.replace(/ /g, '');
  return {edges: [...new Set(host._cyreg.cy.edges('.path').map(e => plain(e.style('line-color'))))],
          key: [...document.querySelectorAll('.lrp-graph-legend .lrp-path-key')]
            .map(el => [el.innerText.replace(/\u00a0/g, ' ').trim(), plain(getComputedStyle(el).color)])};
}"""


def test_the_k_paths_have_a_colour_each_and_a_key(page):
    """k = 2 and k = 10 look different: each path has its own colour (an edge shared by paths takes the best one's)
    and the legend's key names path 1 … path k in those colours."""
    box = page.locator(".widget-inline-hbox").filter(has=page.locator("label", has_text="k paths")).locator("input")
    for k in (2, 10):
        box.fill(str(k))
        box.press("Enter")
        wait_until(page, lambda: idle(page) and f"the {k} best paths" in views(page)["legend"]
                   and graph(page)["paths"] > 0, f"the graph's {k} paths")
        shown = page.evaluate(PATH_COLOURS)
        assert [name for name, _ in shown["key"]] == [f"━ path {rank}" for rank in range(1, k + 1)], shown
        assert len(shown["edges"]) == k and set(shown["edges"]) == {colour for _, colour in shown["key"]}, shown
        page.locator(".lrp-graph-legend").scroll_into_view_if_needed()
        shot(page, f"paths-k{k}")


def test_two_quick_class_clicks_show_the_last_class(page):
    second, fourth = bar_class(page, 1), bar_class(page, 3)
    page.evaluate(RECORD)
    boxes = [page.locator(".bqplot .bar").nth(i).bounding_box() for i in (1, 3)]
    points = [(b["x"] + b["width"] / 2, b["y"] + b["height"] - 5) for b in boxes]
    start = time.monotonic()
    page.mouse.click(*points[0])
    page.mouse.click(*points[1])
    assert time.monotonic() - start < 0.3, "the two clicks were not quick"
    wait_for_class(page, fourth, f"every view to show the 4th class {fourth}")
    assert views(page)["highlighted"] == [3]
    assert class_node(page)["label"] == fourth.rsplit(" (", 1)[0]
    # the 2nd class's explanation was superseded before it was done: no view ever showed it
    shown_second = [text for text in page.evaluate(SEEN) if class_of(text) == second]
    assert shown_second == [], "a superseded class's results were shown"
    shot(page, "quick-clicks")
    fourth_png = heatmap(page, "relevance")
    page.locator("select").filter(has=page.locator("option", has_text="%")).first.select_option(index=1)
    wait_for_class(page, second, f"every view to show the 2nd class {second}")
    assert views(page)["highlighted"] == [1]
    assert heatmap(page, "relevance") != fourth_png
    shot(page, "quick-clicks-then-second")


@contextmanager
def busy_cpus(count: int = 2) -> Iterator[None]:
    """Processes that keep ``count`` cores busy: a classroom server is never idle."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


#: the views that show the explained class, and the text in each that names it
CLASS_VIEWS = ("lrp-relevanceheatmap", "lrp-activationheatmap", "lrp-layergraph", "lrp-thresholdslider", "lrp-sweep")


def test_views_not_yet_showing_a_new_class_are_dimmed_and_say_what_is_coming(page):
    """After a class click on a loaded machine every view showing a class is dimmed under "updating for <the new
    class>" before any view shows the new class, and once dimmed it is never shown undimmed with the old class;
    in the end every caption names the class, the image and the model."""
    old, new = bar_class(page, 0), bar_class(page, 1)
    page.evaluate(RECORD_VIEWS)
    with busy_cpus():
        page.locator(".bqplot .bar").nth(1).click()
        wait_for_class(page, new, f"every view to show the 2nd class {new} on a loaded machine")
    frames = page.evaluate(FRAMES)
    first_new = min(f["t"] for f in frames for name in CLASS_VIEWS
                    if not f["views"][name]["stale"] and new in f["views"][name]["text"])
    for name in CLASS_VIEWS:
        dimmed = [f for f in frames if f["views"][name]["stale"]]
        assert dimmed, f"{name} was never dimmed"
        assert dimmed[0]["t"] <= first_new, f"{name} was dimmed only after another view showed {new}"
        assert f"updating for class {new} · castle · vgg16" in dimmed[0]["views"][name]["note"], dimmed[0]
        wrong = [f["views"][name]["text"] for f in frames if f["t"] >= dimmed[0]["t"]
                 and not f["views"][name]["stale"] and old in f["views"][name]["text"]]
        assert wrong == [], f"{name} showed {old} undimmed after the click"
    shown = views(page)
    for caption in [*shown["captions"], shown["legend"]]:
        assert f"class {new} · castle · vgg16" in caption, caption
    assert page.locator(".lrp-stale").count() == 0
    shot(page, "dimmed-then-new-class")


def test_quick_changes_on_a_loaded_machine_leave_one_whole_graph(page):
    """Class, α and class again, clicked quickly while two processes keep both cores busy: the browser ends
    with one graph — every element of the same build, every node with its id, every edge between two drawn
    nodes — of the last class, and no console error on the way (an edge that arrived before its nodes was one)."""
    names = [bar_class(page, i) for i in range(5)]
    with busy_cpus():
        for bar in (1, 2, 3):
            page.locator(".bqplot .bar").nth(bar).click()
            page.wait_for_timeout(150)
        handle = alpha_handle(page)
        handle.focus()
        handle.press("ArrowLeft")
        page.locator(".bqplot .bar").nth(4).click()
        wait_for_class(page, names[4], f"every view to show the 5th class {names[4]} on a loaded machine")
    drawn = page.evaluate(ELEMENTS)
    assert len(drawn["builds"]) == 1 and drawn["unnamed"] == 0 and drawn["dangling"] == 0, drawn
    assert drawn["nodes"] == 8 * 15 + 1 + 16 and drawn["edges"] >= 8 * 14, drawn  # VGG16: 15 layers of 8, class, headers
    assert class_node(page)["label"] == names[4].rsplit(" (", 1)[0]
    shot(page, "loaded-machine-quick-changes")


def test_an_upload_then_an_example(page, tmp_path):
    castle = heatmap(page, "relevance")
    rotated = tmp_path / "zebra-rotated.png"
    Image.open(IMAGES / "n02391049_zebra.JPEG").convert("RGB").rotate(90, expand=True).save(rotated)
    upload(page, rotated)
    # the name shows at once, the explanation a few seconds later: wait for a picture other than the castle's
    wait_until(page, lambda: idle(page) and views(page)["image"] == "image: zebra-rotated.png"
               and heatmap(page, "relevance") != castle, "the upload's explanation")
    uploaded = heatmap(page, "relevance")
    state = views(page)
    assert [b["label"] for b in state["examples"] if b["active"]] == [], "an example button stays highlighted"
    assert len(state["captions"]) == 2 and all(class_of(c) for c in state["captions"])
    shot(page, "upload")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture either")
    upload(page, bad)
    wait_until(page, lambda: "not an image" in views(page)["error"], "the bad upload's error line")
    assert views(page)["image"] == "image: zebra-rotated.png"
    example_button(page, "castle").click()
    wait_until(page, lambda: idle(page) and views(page)["image"] == "image: castle"
               and heatmap(page, "relevance") != uploaded, "the castle's explanation")
    state = views(page)
    assert state["error"] == "", "the earlier error line is still shown"
    assert [b["label"] for b in state["examples"] if b["active"]] == ["castle"]
    assert heatmap(page, "relevance") == castle  # the same picture and class as at the start
    assert set(classes_shown(page).values()) == {bar_class(page, 0)}
    shot(page, "upload-then-castle")


def upload_button(page) -> str:
    return page.locator(".widget-upload").inner_text().replace("\xa0", " ").strip()


def test_the_upload_button_counts_the_uploaded_file_on_screen(page, tmp_path):
    """After an upload the button says one file is uploaded, beside the file's name; an example puts it back to 0."""
    assert upload_button(page) == "upload (0)"
    barn = tmp_path / "my-barn.png"
    Image.open(IMAGES / "n02793495_barn.JPEG").convert("RGB").save(barn)
    upload(page, barn)
    wait_until(page, lambda: idle(page) and views(page)["image"] == "image: my-barn.png"
               and all(" · my-barn.png · " in caption for caption in views(page)["captions"]), "the upload's explanation")
    assert upload_button(page) == "upload (1)"
    shot(page, "upload-counter")
    example_button(page, "zebra").click()
    wait_until(page, lambda: idle(page) and views(page)["image"] == "image: zebra"
               and all(" · zebra · " in caption for caption in views(page)["captions"]), "the zebra's explanation")
    assert upload_button(page) == "upload (0)"


def test_the_wheel_zooms_within_bounds_and_fit_shows_the_whole_graph(page):
    shown = graph(page)
    centre = (shown["left"] + shown["width"] / 2, shown["top"] + shown["height"] / 2)
    page.mouse.move(*centre)
    zooms = []
    for delta in [-100] * 5 + [100] * 10:  # five notches in, back, and five more out
        page.mouse.wheel(0, delta)
        page.wait_for_timeout(150)
        shown = graph(page)
        zooms.append(shown["zoom"])
        assert 0.2 - 1e-9 <= shown["zoom"] <= 4 + 1e-9, zooms
        visible = [n for n in shown["nodes"] if inside(shown, n)
                   and n["box"]["w"] >= 3 and "header" not in n["classes"]]
        assert visible, f"no node visible at zoom {shown['zoom']}"
        if len(zooms) == 5:
            shot(page, "zoomed-in")
    assert zooms[4] > zooms[0] and zooms[-1] < zooms[5], zooms  # the wheel zooms at all
    shot(page, "zoomed-out")
    page.mouse.move(centre[0], centre[1] + 5)
    zoom_in_until(page, lambda: not all(inside(graph(page), n) for n in graph(page)["nodes"]), "nodes leave the canvas")
    page.get_by_role("button", name="fit").click()
    wait_until(page, lambda: all(inside(graph(page), n) for n in graph(page)["nodes"]), "fit to show every node")
    assert len(graph(page)["nodes"]) == 8 * 15 + 1 + 16
    shot(page, "fit")


RESNET50_BLOCKS = [f"layer{stage}.{block}" for stage, count in enumerate((3, 4, 6, 3), 1) for block in range(count)]


def shows_resnet50(page) -> bool:
    return idle(page) and "resnet50" in banner(page) and len(headers(page)) == len(RESNET50_BLOCKS) + 1


def test_resnet50_picked_in_the_app_shows_its_blocks_neurons_and_alpha(page):
    vgg = {title: heatmap(page, title) for title in ("relevance", "activation")}
    assert "vgg16" in banner(page) and headers(page)[0] == "conv1_1"
    pick_model(page, "ResNet", "resnet50")
    wait_until(page, lambda: shows_resnet50(page), "ResNet-50's explanation")
    shot(page, "resnet50")
    top1 = bar_class(page, 0)
    assert set(classes_shown(page).values()) == {top1}, classes_shown(page)
    assert class_node(page)["label"] == top1.rsplit(" (", 1)[0]  # the class node is the last column
    for title in ("relevance", "activation"):
        assert heatmap(page, title) != vgg[title], title
    shown = graph(page)
    assert all(inside(shown, node) for node in shown["nodes"])
    # a neuron of block layer2.1: the deconvolution panel and its heatmap
    node = next(n for n in shown["nodes"] if n["id"].startswith("layer2.1."))
    click_node(page, node)
    layer, index = node["id"].rsplit(":", 1)
    wait_until(page, lambda: f"selected: {layer} (layer2.1) neuron {index}" in views(page)["text"] and idle(page),
               "the deconvolution of a ResNet-50 neuron")
    heatmap(page, "deconvolution")
    heatmap(page, "neuron relevance")
    page.locator(".lrp-sweep").scroll_into_view_if_needed()
    shot(page, "resnet50-neuron")
    # α: the slider, then the α layer's dropdown (ResNet-50's blocks)
    before = heatmap(page, "relevance")
    handle = alpha_handle(page)
    handle.focus()
    for _ in range(2):  # 1 → 0.5
        handle.press("ArrowLeft")
    wait_until(page, lambda: idle(page) and "α = 0.5 keeps at" in views(page)["captions"][0],
               "the caption for α = 0.5")
    assert heatmap(page, "relevance") != before and "α = 0.5" in views(page)["legend"]
    layers = page.locator(".widget-dropdown").filter(has=page.locator("label", has_text="layer")).locator("select")
    assert layers.locator("option").all_inner_texts() == RESNET50_BLOCKS
    layers.select_option(index=RESNET50_BLOCKS.index("layer3.5"))
    wait_until(page, lambda: idle(page) and "α = 0.5 keeps at layer3.5" in views(page)["captions"][0]
               and alpha_header(page).startswith("layer3.5\n"),
               "Algorithm 1 at layer3.5 in the heatmap and the graph")
    shot(page, "resnet50-alpha")
    assert headers(page) == RESNET50_BLOCKS + ["fc"]


@pytest.mark.parametrize("page", [(1280, 720)], indirect=True)  # a laptop's screen
def test_family_depth_and_class_clicked_at_once_end_on_resnet50(page):
    page.evaluate(RECORD)
    bar = page.locator(".bqplot .bar").nth(2).bounding_box()
    chosen = bar_class(page, 2)
    start = time.monotonic()
    pick_model(page, "ResNet", "resnet50")
    page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] - 5)
    assert time.monotonic() - start < 2, "the clicks were not quick"

    def every_view_on_the_chosen_class() -> bool:  # its bar is highlighted if it is among ResNet-50's top-5
        shown = classes_shown(page)
        bars = [class_of(option) for option in views(page)["options"][:5]]
        return shown.pop("highlighted bar") == (chosen if chosen in bars else "0 bars highlighted") and \
            set(shown.values()) == {chosen}
    wait_until(page, lambda: shows_resnet50(page) and every_view_on_the_chosen_class(),
               f"ResNet-50's explanation of {chosen} in every view")
    assert not [text for text in page.evaluate(SEEN) if "resnet18" in text], "the superseded ResNet-18 was shown"
    shown = graph(page)
    assert all(inside(shown, node) for node in shown["nodes"]) and min(page.evaluate(FONTS)) >= 11
    shot(page, "resnet50-1280x720")
    page.locator(".lrp-graph-legend").scroll_into_view_if_needed()
    shot(page, "resnet50-1280x720-graph")
