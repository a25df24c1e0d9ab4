"""What a student sees at three screen sizes: every view with its colour bar and a line on how to read
it, labels large enough to read, nothing overlapping, the pictures above the fold on a laptop, a status
line that moves nothing, no request leaving the machine, and a neuron picker that Tab reaches."""
from __future__ import annotations

from pathlib import Path

import pytest

from .test_app_browser import (CHROMIUM, FONTS, TIMEOUT, browser, graph, playwright, server,  # noqa: F401
                               shot, views, wait_idle, wait_until)

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
