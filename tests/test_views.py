"""Every link between the views, at the Python level: set a trait, check what each view now holds."""
import datetime
import io

import numpy as np
import pytest
from PIL import Image

from lrp_widgets.analysis.render import relevance_overlay
from lrp_widgets.views import (ActivationHeatmap, DeconvPanel, Explorer, ExplorerState, RelevanceHeatmap, Session,
                               ThresholdSlider)

from .conftest import CASTLE


@pytest.fixture(scope="module")
def explorer():
    return Explorer(weights="random", image=str(CASTLE), background=False)


def png_of(figure) -> bytes:
    return figure.png


def click(explorer, layer, index):
    cytoscape = explorer.graph.cytoscape
    cytoscape._handle_interaction(cytoscape, {"widget": "node", "event": "click",
                                              "data": {"data": {"id": f"{layer}:{index}", "layer": layer,
                                                                "index": index}}}, [])


def test_first_explanation_fills_every_view(explorer):
    state = explorer.state
    assert state.bundle is not None and not state.pretrained and state.error == ""
    assert state.sweep_ready and state.paths_revision > 0
    assert "untrained" in explorer.status.banner.value
    assert len(explorer.graph.cytoscape.graph.nodes) == 8 * 15 + 1 + 16
    assert any("path" in edge.classes for edge in explorer.graph.cytoscape.graph.edges)
    assert "optimal α" in explorer.threshold.readout.value
    assert len(explorer.classes.bars.y) == 5 and explorer.classes.choice.value == state.bundle.target


def test_alpha_changes_selection_heatmap_graph_and_readout(explorer):
    state = explorer.state
    state.heatmap_mode = "selection"
    before = (png_of(explorer.relevance.figure), explorer.threshold.readout.value,
              [(n.classes, n.data.get("label")) for n in explorer.graph.cytoscape.graph.nodes])
    state.alpha = -1.5
    after = (png_of(explorer.relevance.figure), explorer.threshold.readout.value,
             [(n.classes, n.data.get("label")) for n in explorer.graph.cytoscape.graph.nodes])
    assert all(b != a for b, a in zip(before, after))
    expected = relevance_overlay(state.bundle.picture, state.bundle.sweep(state.layer).heatmaps[2], state.opacity)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_of(explorer.relevance.figure)))), expected)
    assert list(explorer.threshold.marker.x) == [-1.5, -1.5]


def test_k_changes_paths_in_graph_and_heatmap_options(explorer):
    state = explorer.state
    state.k = 2
    assert len(state.bundle.paths(2)) == 2
    assert [v for _, v in explorer.relevance.mode.options][-1] == "path 1"
    red = {e.data["id"] for e in explorer.graph.cytoscape.graph.edges if "path" in e.classes}
    expected = {f"{u.id}->{v.id}" for p in state.bundle.paths(2) for u, v in zip(p.nodes, p.nodes[1:])}
    assert red == expected
    state.k = 5


def test_display_choices_never_recompute(explorer, monkeypatch):
    state = explorer.state
    calls = []
    monkeypatch.setattr(state.bundle.explanation, "propagate", lambda *a, **k: calls.append(1))
    for mode in ("full", "paths", "path 0", "selection"):
        state.heatmap_mode = mode
    state.opacity = 0.3
    explorer.activation.mode.value = "path 1"
    assert calls == []


def test_clicking_a_node_selects_it_and_fills_the_deconv_panel(explorer):
    state = explorer.state
    before = png_of(explorer.deconv.deconvolution)
    click(explorer, "features.26", 7)
    assert state.selected == ("features.26", 7)
    assert "features.26" in explorer.deconv.label.value and png_of(explorer.deconv.deconvolution) != before
    node = next(n for n in explorer.graph.cytoscape.graph.nodes if n.data["id"] == "features.26:7") \
        if any(n.data["id"] == "features.26:7" for n in explorer.graph.cytoscape.graph.nodes) else None
    assert node is None or "selected-neuron" in node.classes
    explorer.activation.mode.value = "neuron"
    assert "selected neuron" in explorer.activation.figure.title


def test_class_change_reexplains_and_returning_is_cached(explorer):
    state = explorer.state
    first = state.bundle
    state.target = 483
    assert state.bundle.target == 483 and state.bundle is not first
    assert "castle" in explorer.classes.choice.label
    state.target = first.target
    assert state.bundle is first  # cached per (image, class, weights)


def test_layer_change_sweeps_that_layer(explorer):
    state = explorer.state
    state.layer = "features.14"
    assert state.sweep_ready and explorer.threshold.layer.value == "features.14"
    assert "keeps" in explorer.threshold.readout.value and "/256" in explorer.threshold.readout.value
    state.layer = "features.28"


def test_bad_upload_shows_a_message_and_keeps_the_explanation(explorer):
    state = explorer.state
    bundle = state.bundle
    explorer.picker.upload.value = ({"name": "notes.jpg", "type": "image/jpeg", "size": 5,
                                     "content": memoryview(b"hello"),
                                     "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert "not an image" in state.error and state.bundle is bundle
    assert "lrp-error" in explorer.status.message.value
    state.k = 4  # a job that finishes afterwards leaves the message in place
    assert "not an image" in state.error
    state.k = 5
    explorer.picker.examples.value = "zebra"
    assert state.error == "" and state.image_name == "zebra" and state.bundle is not bundle


def test_views_work_alone_on_a_state():
    state = ExplorerState(weights="random")
    Session(state, background=False)
    heatmap, slider = RelevanceHeatmap(state), ThresholdSlider(state)
    activation, deconv = ActivationHeatmap(state), DeconvPanel(state)
    state.image = Image.open(CASTLE)
    assert heatmap.figure.png and slider.layer.value == "features.28" and activation.figure.png
    state.selected = ("features.28", 3)
    assert "features.28" in deconv.label.value


def test_background_session_supersedes_older_requests():
    state = ExplorerState(weights="random")
    session = Session(state, background=True)
    state.image = Image.open(CASTLE)
    state.image = Image.open(CASTLE).rotate(90)
    session.wait()
    assert state.bundle is not None and len(session.bundles) <= 2 and not state.busy and state.error == ""
    session.wait()
    assert state.sweep_ready
