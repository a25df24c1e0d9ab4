"""The app on a vision transformer, in a real browser: ViT-B/32 picked in the model picker, every view drawn and
named, a neuron of an encoder block showing its conditional relevance and why it has no deconvolution."""
from __future__ import annotations

from .test_app_browser import (banner, browser, click_node, graph, headers, heatmap, idle, inside, page,  # noqa: F401
                               pick_model, playwright, server, shot, views, wait_until)

VIT_BLOCKS = [f"block {i}" for i in range(12)]


def test_a_vit_picked_in_the_app_shows_every_view(page):  # noqa: F811
    pick_model(page, "ViT", "vit_b_32")
    wait_until(page, lambda: idle(page) and "vit_b_32" in banner(page) and headers(page)[:12] == VIT_BLOCKS,
               "ViT-B/32's explanation", timeout=600)
    shot(page, "vit")
    shown = views(page)
    assert shown["error"] == ""
    assert all("vit_b_32" in caption for caption in shown["captions"]), shown["captions"]
    for title in ("relevance", "activation"):
        heatmap(page, title)  # drawn: not the placeholder
    drawn = graph(page)
    assert all(inside(drawn, node) for node in drawn["nodes"])
    node = next(n for n in drawn["nodes"] if n["id"].startswith("encoder.layers.encoder_layer_11.")
                and "header" not in n["classes"])
    click_node(page, node)
    wait_until(page, lambda: idle(page) and "(block 11) neuron" in views(page)["text"]
               and "no deconvolution" in views(page)["text"], "a ViT neuron's panel", timeout=300)
    heatmap(page, "neuron relevance")
    page.locator(".lrp-no-deconvolution").scroll_into_view_if_needed()
    shot(page, "vit-neuron")
    assert "the deconvnet has no step for" in page.locator(".lrp-no-deconvolution").inner_text()
