"""What a student sees at three screen sizes: every view with its colour bar and a line on how to read
it, labels large enough to read, nothing overlapping, the pictures above the fold on a laptop, a status
line that moves nothing, no request leaving the machine, and a neuron picker that Tab reaches."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lrp_widgets.app import free_port

from .test_app_browser import (ARTIFACTS, CHROMIUM, FONTS, TIMEOUT, banner, browser, click_node, graph, headers,  # noqa: F401
                               idle, pick_model, playwright, server, shot, views, wait_idle, wait_until, zoom_in_until)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

SIZES = [(1280, 720), (1440, 1000), (768, 1024)]

#: the boxes of the views a student reads, by name
BOXES = """() => {
  const box = el => { const r = el.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; };
  const figures = [...document.querySelectorAll('.bqplot')].map(f => [f.querySelector('.mainheading')?.textContent, f]);
  const named = {};
  for (const [title, el] of figures) named[(title || '').split(':')[0]] = box(el);
  named['graph'] = box([...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy).parentElement.parentElement);
  return named;
}"""

TEXT_SIZES = """() => [...document.querySelectorAll('.lrp-how, .lrp-caption, .lrp-colourbar, .lrp-graph-legend')]
  .flatMap(el => [...el.querySelectorAll('*')]).filter(el => el.childNodes.length && el.innerText)
  .map(el => parseFloat(getComputedStyle(el).fontSize))"""


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def sized_page(request, server, browser):  # noqa: F811
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_cookies([{"name": "_xsrf", "value": "lrp-widgets-browser-test", "url": server}])
    page = context.new_page()
    page.console_errors, page.outside = [], []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("request", lambda r: not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            and page.outside.append(r.url))
    page.goto(server, timeout=TIMEOUT * 1000)
    page.wait_for_selector(".lrp-explorer", timeout=TIMEOUT * 1000)
    wait_idle(page, "the first explanation")
    page.size = (width, height)
    yield page
    page.goto("about:blank")
    context.close()


def overlap(a: dict, b: dict) -> float:
    width = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    height = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return max(width, 0) * max(height, 0)


def test_every_view_explains_itself_readably_and_fits(sized_page):
    page, (width, height) = sized_page, sized_page.size
    shot(page, f"layout-{width}x{height}")
    assert page.title() == "LRP explorer: what does the network see?"
    assert page.locator(".lrp-colourbar").count() == 4  # relevance, activation, deconvolution, neuron relevance
    assert page.locator(".lrp-how").count() >= 6
    text = page.inner_text(".lrp-explorer")
    for words in ("evidence", "against the class", "most active", "How to read", "Size = |relevance|",
                  "optimal α", "the fewest kept neurons whose MSE is at most the mean MSE"):
        assert words in text, words
    # graph labels and every explanatory text at 11 px or more
    assert min(page.evaluate(FONTS)) >= 11
    assert min(page.evaluate(TEXT_SIZES)) >= 11
    labels = [n["label"] for n in graph(page)["nodes"] if "header" in n["classes"]]
    assert labels[:2] == ["conv1_1", "conv1_2"] and labels[-1] == "fc8"
    # the views do not overlap one another, and none runs off the page
    boxes = page.evaluate(BOXES)
    names = ["relevance", "activation", "top-5 classes", "threshold sweep", "deconvolution", "neuron relevance",
             "graph"]
    assert set(names) <= set(boxes), boxes.keys()
    for i, a in enumerate(names):
        assert boxes[a]["x"] >= 0 and boxes[a]["x"] + boxes[a]["w"] <= width, (a, boxes[a])
        for b in names[i + 1:]:
            assert overlap(boxes[a], boxes[b]) == 0, (a, b)
    if (width, height) == (1280, 720):  # the image and its heatmaps above the fold on a laptop
        for name in ("relevance", "activation"):
            assert 0 <= boxes[name]["y"] and boxes[name]["y"] + boxes[name]["h"] <= height, name
    assert page.outside == [] and page.console_errors == []


def test_the_status_line_moves_nothing_and_a_neuron_is_picked_by_keyboard(sized_page):
    page = sized_page
    top = page.evaluate(BOXES)["graph"]["y"]
    select = page.locator("select").filter(has=page.locator("option", has_text="%")).first
    select.select_option(index=2)
    wait_until(page, lambda: views(page)["busy"], "the status line to say what is computed", timeout=30)
    assert page.evaluate(BOXES)["graph"]["y"] == top
    wait_idle(page, "the new class")
    assert page.evaluate(BOXES)["graph"]["y"] == top
    # Tab through the page to the neuron picker, then choose a neuron with the arrow keys
    page.locator("body").click(position={"x": 2, "y": 2})
    for _ in range(100):
        page.keyboard.press("Tab")
        first = page.evaluate("() => { const e = document.activeElement; return e.options ? e.options[0].text : ''; }")
        if "pick a neuron" in first.replace("\xa0", " "):
            break
    else:
        pytest.fail("Tab never reached the neuron picker")
    options = [text.replace("\xa0", " ") for text in page.locator("select:focus option").all_inner_texts()]
    page.locator("select:focus").select_option(index=next(  # the first neuron of conv5_3, in the focused picker
        i for i, text in enumerate(options) if text.startswith("conv5_3")))
    wait_until(page, lambda: "selected: features.28 (conv5_3) neuron" in views(page)["text"],
               "the neuron chosen by keyboard")
    shot(page, f"keyboard-{page.size[0]}x{page.size[1]}")
    assert page.outside == [] and page.console_errors == []


# the layer graph at every width: its frame, its column labels, "fit", the selected neuron ---------------------
GRAPH_SIZES = [(768, 1024), (1280, 720), (1440, 900)]

#: the graph's visible frame on the page, and each node's box (nodes and their labels) and label box, in page px
GRAPH_ON_PAGE = """() => {
  const host = [...document.querySelectorAll('div')].find(el => el._cyreg && el._cyreg.cy);
  const frame = host.closest('.lrp-graph-frame') || host.parentElement.parentElement;
  const f = frame.getBoundingClientRect(), c = host.getBoundingClientRect();
  const page = b => ({x1: c.left + b.x1, y1: c.top + b.y1, x2: c.left + b.x2, y2: c.top + b.y2});
  return {frame: {x1: f.left, y1: f.top, x2: f.right, y2: f.bottom},
          nodes: host._cyreg.cy.nodes().map(n => ({id: n.data('neuron') || n.id(), label: n.data('label'),
            header: n.hasClass('header'), box: page(n.renderedBoundingBox()),
            text: page(n.renderedBoundingBox({includeNodes: false, includeEdges: false, includeMainLabels: true}))}))};
}"""


def within(box: dict, frame: dict) -> bool:
    return box["x1"] >= frame["x1"] and box["y1"] >= frame["y1"] and box["x2"] <= frame["x2"] and box["y2"] <= frame["y2"]


def on_page(page) -> dict:
    page.locator(".lrp-layergraph").scroll_into_view_if_needed()
    return page.evaluate(GRAPH_ON_PAGE)


def the_class_node(shown: dict) -> dict:
    """The one neuron of the rightmost column."""
    nodes = [n for n in shown["nodes"] if not n["header"]]
    last = max(n["box"]["x1"] + n["box"]["x2"] for n in nodes)
    column = [n for n in nodes if abs(n["box"]["x1"] + n["box"]["x2"] - last) < 2]
    assert len(column) == 1, column
    return column[0]


def overlapping_labels(shown: dict) -> list[tuple[str, str]]:
    """The pairs of column labels whose texts overlap on screen."""
    texts = [(n["label"], {"x": n["text"]["x1"], "y": n["text"]["y1"], "w": n["text"]["x2"] - n["text"]["x1"],
                           "h": n["text"]["y2"] - n["text"]["y1"]}) for n in shown["nodes"] if n["header"]]
    return [(a, b) for i, (a, box) in enumerate(texts) for b, other in texts[i + 1:] if overlap(box, other) > 0]


@pytest.mark.parametrize("sized_page", GRAPH_SIZES, ids=[f"{w}x{h}" for w, h in GRAPH_SIZES], indirect=True)
def test_the_graph_fits_its_frame_and_its_column_labels_do_not_overlap(sized_page):
    page, (width, height) = sized_page, sized_page.size
    shown = on_page(page)
    shot(page, f"graph-vgg16-{width}x{height}")
    assert shown["frame"]["x2"] <= width
    assert within(the_class_node(shown)["box"], shown["frame"]), (the_class_node(shown), shown["frame"])
    assert overlapping_labels(shown) == []
    assert min(page.evaluate(FONTS)) >= 11
    pick_model(page, "DenseNet", "densenet121")
    wait_until(page, lambda: idle(page) and "densenet121" in banner(page) and headers(page)[-1] == "classifier",
               "DenseNet-121's graph")
    shown = on_page(page)
    shot(page, f"graph-densenet121-{width}x{height}")
    assert headers(page)[:2] == ["denseblock1", "transition1"]
    assert within(the_class_node(shown)["box"], shown["frame"]), (the_class_node(shown), shown["frame"])
    assert overlapping_labels(shown) == []
    assert min(page.evaluate(FONTS)) >= 11


@pytest.mark.parametrize("sized_page", GRAPH_SIZES, ids=[f"{w}x{h}" for w, h in GRAPH_SIZES], indirect=True)
def test_fit_shows_the_whole_graph_inside_its_frame(sized_page):
    page = sized_page
    frame = on_page(page)["frame"]
    page.mouse.move((frame["x1"] + frame["x2"]) / 2, (frame["y1"] + frame["y2"]) / 2)
    zoom_in_until(page, lambda: not all(within(n["box"], on_page(page)["frame"]) for n in on_page(page)["nodes"]),
                  "nodes leave the frame")
    page.get_by_role("button", name="fit").click()
    wait_until(page, lambda: all(within(n["box"], on_page(page)["frame"]) for n in on_page(page)["nodes"]),
               "fit to bring the whole graph into its frame", timeout=30)
    shot(page, f"graph-fit-{page.size[0]}x{page.size[1]}")


DECONV_IN_VIEW = """() => { const r = document.querySelector('.lrp-deconvpanel').getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight; }"""


@pytest.mark.parametrize("sized_page", [(768, 1024)], ids=["768x1024"], indirect=True)
def test_a_selected_neuron_brings_its_panel_into_view(sized_page):
    page = sized_page
    shown = on_page(page)
    assert not page.evaluate(DECONV_IN_VIEW)
    node = next(n for n in shown["nodes"] if n["id"].startswith("features.2:"))  # conv1_2's most relevant neuron
    assert within(node["box"], shown["frame"])
    layer, index = node["id"].rsplit(":", 1)
    click_node(page, next(n for n in graph(page)["nodes"] if n["id"] == node["id"]))
    wait_until(page, lambda: page.evaluate(DECONV_IN_VIEW), "the deconvolution panel to come into view", timeout=30)
    wait_until(page, lambda: f"selected: {layer} (" in views(page)["text"] and f"neuron {index}," in views(page)["text"],
               "the clicked neuron")
    shot(page, "graph-clicked-768x1024")
    # back to the graph, then a neuron picked from the menu
    picker = page.locator(".lrp-layergraph select")
    picker.scroll_into_view_if_needed()
    assert not page.evaluate(DECONV_IN_VIEW)
    picker.select_option(index=3)
    wait_until(page, lambda: page.evaluate(DECONV_IN_VIEW), "the deconvolution panel to come into view", timeout=30)
    shot(page, "graph-picked-768x1024")


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on a free local port, its own settings and a copy of notebooks/explorer.ipynb; its URL with the token."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(Path(__file__).resolve().parents[1] / "notebooks" / "explorer.ipynb", root)
    port, token = free_port(), "lrp-widgets-layout-test"
    env = dict(os.environ, LRP_WIDGETS_WEIGHTS="random", JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(root / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"))
    command = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(ARTIFACTS / "jupyterlab.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while not answers(f"http://127.0.0.1:{port}/api/status?token={token}"):
                assert time.time() < deadline and process.poll() is None, "JupyterLab did not start"
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}"
        finally:
            process.terminate()
            process.wait(10)


def test_in_jupyterlab_the_class_node_stays_in_the_frame_when_the_file_browser_opens(jupyterlab, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_errors = []
    page.goto(jupyterlab, timeout=TIMEOUT * 1000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=TIMEOUT * 1000)
    files = page.locator(".jp-SideBar.jp-mod-left [data-id='filebrowser']")
    if page.locator("#filebrowser").is_visible():  # JupyterLab opens with the file browser: close it first
        files.click()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=TIMEOUT * 1000)
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(".lrp-explorer", timeout=TIMEOUT * 1000)
    finally:
        shot(page, "jupyterlab-ran")
    wait_idle(page, "the first explanation in JupyterLab")
    files.click()
    wait_until(page, lambda: page.locator("#filebrowser").is_visible(), "the file browser to open", timeout=30)
    page.wait_for_timeout(500)  # the panel's opening transition
    page.locator(".lrp-layergraph").scroll_into_view_if_needed()
    shown = page.evaluate(GRAPH_ON_PAGE)
    shot(page, "jupyterlab-file-browser")
    context.close()
    assert within(the_class_node(shown)["box"], shown["frame"]), (the_class_node(shown), shown["frame"])
