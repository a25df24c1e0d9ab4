"""The atlas in the app, in a real browser: `lrp-widgets app --atlas DIR` (an atlas built by the test); the reference
strip of a chosen neuron holds exactly the atlas's top images of that neuron for the chosen statistic, switching the
statistic changes them, and quick neuron changes never leave another neuron's strip on screen."""
from __future__ import annotations

import warnings

import pytest

from lrp_widgets.app import running_app
from lrp_widgets.atlas import Atlas, build_atlas
from lrp_widgets.engine.models import load_model

from .atlas_folders import case_study_folder
from .test_app_browser import ARTIFACTS, IMAGES, TIMEOUT, browser, idle, playwright, shot, wait_until  # noqa: F401

STRIP = """() => [...document.querySelectorAll('.lrp-reference-strip img')].map(img => img.title)"""
PICK = "— pick a neuron —"


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    folder = case_study_folder(tmp_path_factory.mktemp("folder"), per_class=2, bad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("vgg11", "random")
    out = tmp_path_factory.mktemp("atlas") / "atlas"
    build_atlas(folder, model, out, ["features.13", "features.18"], k=10, progress=False, workers=0)
    return Atlas.open(out)


@pytest.fixture(scope="module")
def server(atlas):
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"LRP_WIDGETS_ATLAS": str(atlas.folder), "LRP_WIDGETS_IMAGES": str(IMAGES)}
    with open(ARTIFACTS / "voila-atlas.log", "w") as log, running_app(env, log=log, max_kernels=8) as url:
        yield url


@pytest.fixture(params=[(1280, 720), (1440, 900)], ids=["1280x720", "1440x900"])
def page(request, server, browser):  # noqa: F811
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_cookies([{"name": "_xsrf", "value": "lrp-widgets-browser-test", "url": server}])
    page = context.new_page()
    page.size, page.console_errors = (width, height), []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.goto(server, timeout=TIMEOUT * 1000)
    page.wait_for_selector(".lrp-explorer", timeout=TIMEOUT * 1000)
    wait_until(page, lambda: idle(page), "the first explanation")
    yield page
    context.close()


def neuron_menu(page):
    return page.locator("select").filter(has=page.locator("option", has_text=PICK))


def neuron_labels(page) -> list[str]:
    return neuron_menu(page).evaluate("select => [...select.options].map(o => o.textContent.replace(/\\u00a0/g, ' '))")


def pick(page, label_start: str) -> tuple[str, int]:
    """Choose the first neuron of the menu whose label starts so; (layer, index) as the atlas names them."""
    labels = neuron_labels(page)
    index = next(i for i, text in enumerate(labels) if text.startswith(label_start))
    label = labels[index]
    neuron_menu(page).select_option(index=index)
    return label, int(label.split("#")[1].split()[0])


def strip(page) -> list[str]:
    return page.evaluate(STRIP)


def expected(atlas, layer: str, channel: int, statistic: str) -> list[str]:
    return [row["image"] for row in atlas.references(layer, channel, statistic)[:8]]


def test_the_strip_is_the_atlas_top_images_and_follows_the_statistic(page, atlas):
    width, height = page.size
    _, channel = pick(page, "conv5_2 #")
    want = expected(atlas, "features.18", channel, "relevance_sum")
    wait_until(page, lambda: strip(page) == want, "the neuron's reference strip")
    page.locator(".lrp-referencestrip").scroll_into_view_if_needed()
    shot(page, f"atlas-strip-{width}x{height}")
    page.locator(".lrp-referencestrip .widget-toggle-button", has_text="activation · max").click()
    want = expected(atlas, "features.18", channel, "activation_max")
    wait_until(page, lambda: strip(page) == want, "the strip ranked by the activation's maximum")
    assert want != expected(atlas, "features.18", channel, "relevance_sum")
    assert "activation at its strongest position" in page.locator(".lrp-reference-caption").inner_text()


def test_quick_neuron_changes_leave_the_last_neurons_strip(page, atlas):
    labels = neuron_labels(page)
    chosen = [i for i, text in enumerate(labels) if text.startswith("conv4_2 #")][:4]
    for index in chosen:  # one after the other, without waiting
        neuron_menu(page).select_option(index=index)
    channel = int(labels[chosen[-1]].split("#")[1].split()[0])
    want = expected(atlas, "features.13", channel, "relevance_sum")
    wait_until(page, lambda: idle(page) and strip(page) == want, "the last neuron's strip")
    page.wait_for_timeout(1000)  # nothing older arrives afterwards
    assert strip(page) == want
