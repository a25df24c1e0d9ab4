"""Every link between the views, at the Python level: change an input, check what each view now shows
against the published result and against a fresh explanation of the same request."""
import asyncio
import datetime
import io
import random
import threading
import time
import warnings
from html import escape

import comm
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from lrp_widgets.analysis.bundle import SWEEP_CHUNK, Bundle
from lrp_widgets.analysis.render import deconvolution_rgb, relevance_overlay
from lrp_widgets.analysis.threshold import DEFAULT_ALPHAS, threshold_sweep
from lrp_widgets.engine.models import FAMILIES
from lrp_widgets.views.common import short
from lrp_widgets.views import (ActivationHeatmap, DeconvPanel, Explorer, ExplorerState, LayerGraph, RelevanceHeatmap,
                               Session, ThresholdSlider)

from .conftest import CASTLE, IMAGES, run_readme_example


@pytest.fixture(scope="module")
def explorer():
    return Explorer(weights="random", image=str(CASTLE), background=False)


def decoded(figure) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(figure.png)).convert("RGB"))


def click(explorer, layer, index):
    cytoscape = explorer.graph.cytoscape
    cytoscape._handle_interaction(cytoscape, {"widget": "node", "event": "click",
                                              "data": {"data": {"id": f"{layer}:{index}", "layer": layer,
                                                                "index": index}}}, [])


def red_edges(explorer) -> set[str]:
    return {e.data["pair"] for e in explorer.graph.cytoscape.graph.edges if "path" in e.classes.split()}


def path_edge_ids(paths) -> set[str]:
    return {f"{u}->{v}" for path in paths for u, v in path.edges}


def test_first_explanation_fills_every_view(explorer):
    state, result = explorer.state, explorer.state.result
    assert result.complete and result.request == explorer.session.request
    assert not state.pretrained and state.error == "" and not state.busy
    assert "untrained" in explorer.status.banner.value
    assert len(explorer.graph.cytoscape.graph.nodes) == 8 * 15 + 1 + 16
    assert red_edges(explorer) == path_edge_ids(result.paths) != set()
    assert "optimal α" in explorer.threshold.readout.value
    assert len(explorer.classes.bars.y) == 5 and explorer.classes.choice.value == result.target
    assert list(explorer.classes.bars.selected) == [0]  # the top-1 is explained and highlighted
    assert not explorer.relevance.figure.blank
    assert np.array_equal(decoded(explorer.relevance.figure),
                          relevance_overlay(result.bundle.grey_picture, result.masked_relevance, state.opacity))


def test_alpha_changes_selection_heatmap_graph_and_readout(explorer):
    state = explorer.state
    state.heatmap_mode = "selection"
    before = (decoded(explorer.relevance.figure), explorer.threshold.readout.value)
    state.alpha = -1.5
    result = state.result
    assert result.request.alpha == -1.5 and result.selection.alpha == -1.5
    assert not np.array_equal(decoded(explorer.relevance.figure), before[0])
    assert explorer.threshold.readout.value != before[1]
    expected = relevance_overlay(result.bundle.grey_picture, result.bundle.sweep(state.layer).heatmaps[2], state.opacity)
    assert np.array_equal(decoded(explorer.relevance.figure), expected)
    header = next(n for n in explorer.graph.cytoscape.graph.nodes
                  if "index" not in n.data and n.data["layer"] == state.layer)
    assert header.data["label"] == f"conv5_3\n{int(result.selection.kept.sum())}/512 kept"
    dropped = {n.data["neuron"] for n in explorer.graph.cytoscape.graph.nodes if "dropped" in n.classes.split()}
    assert dropped == {f"{state.layer}:{n.index}" for n in result.graph.nodes[state.layer]
                       if not result.selection.kept[n.index]}
    assert list(explorer.threshold.marker.x) == [-1.5, -1.5]
    state.alpha = 1.0


def test_k_changes_paths_in_graph_and_heatmap_options(explorer):
    state = explorer.state
    state.k = 2
    assert len(state.result.paths) == 2
    assert [v for _, v in explorer.relevance.mode.options][-1] == "path 1"
    assert red_edges(explorer) == path_edge_ids(state.result.paths)
    assert red_edges(explorer) != path_edge_ids(state.bundle.paths(5))
    state.k = 5


def test_display_choices_render_without_computing(explorer, monkeypatch):
    state, result = explorer.state, explorer.state.result

    def refuse(*args, **kwargs):
        raise AssertionError("a view computed")

    monkeypatch.setattr(result.bundle.explanation, "propagate", refuse)
    monkeypatch.setattr(Bundle, "_cached", refuse)
    shown = []
    for mode in ("full", "paths", "path 0", "selection"):
        state.heatmap_mode = mode
        shown.append(decoded(explorer.relevance.figure))
    expected = [result.bundle.input_relevance, result.union_relevance, result.path_relevance[0], result.masked_relevance]
    for picture, relevance in zip(shown, expected):
        assert np.array_equal(picture, relevance_overlay(result.bundle.grey_picture, relevance, state.opacity))
    state.opacity = 0.3
    assert np.array_equal(decoded(explorer.relevance.figure),
                          relevance_overlay(result.bundle.grey_picture, result.masked_relevance, 0.3))
    before = decoded(explorer.activation.figure)
    explorer.activation.opacity.value = 0.2  # each heatmap has its own opacity
    assert not np.array_equal(decoded(explorer.activation.figure), before) and state.opacity == 0.3
    explorer.activation.mode.value = "path 1"
    assert "path 2" in explorer.activation.figure.title
    state.opacity = 0.8


def test_clicking_a_node_selects_it_and_fills_the_deconv_panel(explorer):
    state = explorer.state
    node = state.result.graph.nodes["features.26"][3]
    assert explorer.deconv.deconvolution.blank
    click(explorer, "features.26", node.index)
    assert state.selected == ("features.26", node.index) == (state.result.neuron.layer, state.result.neuron.index)
    assert f"features.26</b> (conv5_2) neuron <b>{node.index}" in explorer.deconv.label.value
    expected = deconvolution_rgb(state.bundle.deconvolution("features.26", node.index))
    assert np.array_equal(decoded(explorer.deconv.deconvolution), expected)
    shown = next(n for n in explorer.graph.cytoscape.graph.nodes if n.data.get("neuron") == node.id)
    assert "selected-neuron" in shown.classes.split()
    assert sum("selected-neuron" in n.classes.split() for n in explorer.graph.cytoscape.graph.nodes) == 1
    explorer.activation.mode.value = "neuron"
    assert "selected neuron" in explorer.activation.figure.title and not explorer.activation.figure.blank
    explorer.activation.mode.value = "paths"


def test_class_change_reexplains_and_returning_is_cached(explorer):
    state = explorer.state
    first = state.bundle
    state.target = 483
    assert state.result.target == 483 and state.bundle is not first
    assert "castle" in explorer.classes.choice.label and explorer.classes.choice.value == 483
    assert "castle (483)" in explorer.relevance.caption.value and "castle (483)" in explorer.graph.legend.value
    assert explorer.graph.cytoscape.graph.nodes[-1].data["label"] == state.bundle.model.category(483)
    state.target = first.target
    assert state.bundle is first  # cached per (image, class, weights)


def test_the_top1_bar_can_be_clicked_after_another(explorer):
    state, bars = explorer.state, explorer.classes.bars
    top = [p["index"] for p in state.bundle.predictions]
    bars.selected = np.array([1])  # bqplot sends numpy arrays: array([0]) is falsy
    assert state.target == top[1] and state.result.target == top[1]
    bars.selected = np.array([0])
    assert state.target == top[0] and state.result.target == top[0]
    assert explorer.classes.choice.value == top[0]
    bars.selected = None  # a click on the highlighted bar unselects it in the browser
    assert list(bars.selected) == [0] and state.result.target == top[0]


def test_layer_change_sweeps_that_layer(explorer):
    state = explorer.state
    state.layer = "features.14"
    assert state.result.sweep.layer == "features.14" and explorer.threshold.layer.value == "features.14"
    assert "keeps" in explorer.threshold.readout.value and "/256" in explorer.threshold.readout.value
    state.layer = "features.28"


def test_bad_upload_keeps_its_message_until_the_next_choice(explorer):
    state = explorer.state
    bundle = state.bundle
    explorer.picker.upload.value = ({"name": "notes.jpg", "type": "image/jpeg", "size": 5,
                                     "content": memoryview(b"hello"),
                                     "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert "not an image" in state.error and state.bundle is bundle
    assert "lrp-error" in explorer.status.message.value
    explorer.session.wait()  # nothing finishing in the background hides it
    assert "not an image" in state.error and explorer.picker.examples.value is None
    explorer.picker.examples.value = "zebra"
    assert state.error == "" and state.image_name == "zebra" and state.bundle is not bundle
    assert "zebra" in explorer.picker.name.value


def test_after_an_upload_the_examples_work_again(explorer):
    state = explorer.state
    explorer.picker.examples.value = "castle"
    castle = state.bundle
    data = io.BytesIO()
    Image.open(IMAGES / "n02391049_zebra.JPEG").rotate(180).save(data, "PNG")
    explorer.picker.upload.value = ({"name": "upside-down.png", "type": "image/png", "size": len(data.getvalue()),
                                     "content": memoryview(data.getvalue()),
                                     "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert state.image_name == "upside-down.png" and state.bundle is not castle
    assert explorer.picker.examples.value is None and "upside-down.png" in explorer.picker.name.value
    explorer.picker.examples.value = "castle"
    assert state.image_name == "castle" and explorer.picker.examples.value == "castle"
    assert torch.equal(state.bundle.input_relevance, castle.input_relevance)  # recomputed: two are cached


def test_a_failed_request_says_why_and_puts_the_inputs_back(explorer):
    state = explorer.state
    before = state.result
    state.target = 5000
    assert "out of range" in state.error and state.result is before
    assert state.target == before.request.target and explorer.classes.choice.value == before.target
    state.alpha = 0.5  # the next choice clears the message
    assert state.error == "" and state.result.request.alpha == 0.5
    state.alpha = 1.0


def test_views_work_alone_on_a_state():
    state = ExplorerState(model_name="vgg11", weights="random")
    session = Session(state, background=False)
    heatmap, slider = RelevanceHeatmap(state), ThresholdSlider(state)
    activation, deconv, graph = ActivationHeatmap(state), DeconvPanel(state), LayerGraph(state)
    state.image = Image.open(CASTLE)
    result = state.result
    assert result.complete and slider.layer.value == result.layer == "features.18"
    assert np.array_equal(decoded(heatmap.figure),
                          relevance_overlay(result.bundle.grey_picture, result.masked_relevance, state.opacity))
    assert not activation.figure.blank and len(graph.cytoscape.graph.nodes) > 8
    state.selected = ("features.18", 3)
    assert "features.18</b> (conv5_2) neuron <b>3" in deconv.label.value and not deconv.deconvolution.blank
    assert session.request == state.result.request


def test_a_superseded_result_is_dropped_and_filed_under_its_own_class(monkeypatch):
    """The worker computes class A while the user picks B: A's result is never shown, and the cache holds
    A's explanation under A, B's under B."""
    state = ExplorerState(model_name="vgg11", weights="random")
    session = Session(state, background=True)
    state.image = Image.open(CASTLE)
    session.wait()
    top = [p["index"] for p in state.bundle.predictions]
    release, computing = threading.Event(), threading.Event()
    explain = Bundle.explain.__func__

    def slow_explain(cls, model, image, target=None, **kwargs):
        if target == top[1]:
            computing.set()
            release.wait(30)
        return explain(cls, model, image, target, **kwargs)

    monkeypatch.setattr(Bundle, "explain", classmethod(slow_explain))
    shown = []
    state.observe(lambda change: shown.append(change["new"].target), "result")
    state.target = top[1]
    assert computing.wait(30)
    state.target = top[2]  # while class top[1] is being explained
    release.set()
    session.wait()
    assert state.result.target == top[2] and set(shown) == {top[2]}
    assert state.bundle.explanation.targets[0] == top[2]
    for key, bundle in session.bundles.items():
        assert key[1] in (None, bundle.target), key


def test_a_new_graph_reaches_the_browser_before_its_old_elements_are_closed(explorer, monkeypatch):
    """The old graph's node and edge widgets are closed, each after the one message that replaces the graph's
    elements (a closed element still in the graph made the browser drop that message: a broken drawing)."""
    sent = []
    monkeypatch.setattr(comm.DummyComm, "publish_msg", lambda self, kind, data=None, *args, **kwargs: sent.append(
        (kind, self.comm_id, set((data or {}).get("state", {})))))
    graph = explorer.graph.cytoscape.graph
    old = {element.model_id for element in [*graph.nodes, *graph.edges]}
    explorer.state.target = explorer.state.bundle.predictions[2]["index"]
    explorer.session.wait()
    replaced = [i for i, (kind, model, keys) in enumerate(sent) if model == graph.model_id and {"nodes", "edges"} <= keys]
    closed = [i for i, (kind, model, _) in enumerate(sent) if kind == "comm_close" and model in old]
    assert len(replaced) == 1 and len(closed) == len(old) and min(closed) > replaced[0], (replaced, closed[:3])
    explorer.state.target = None
    explorer.session.wait()


def test_a_neuron_clicked_during_the_sweep_is_shown_before_the_sweep_which_resumes_where_it_was():
    """The sweep grows in chunks of α and stops at the next chunk for a newer request: a neuron clicked while
    it runs is shown before the sweep is complete, the sweep then goes on from the chunks done (not from the
    start), and the finished sweep equals one computed at once."""
    state = ExplorerState(model_name="vgg11", weights="random")
    session = Session(state, background=True)
    published = []
    state.observe(lambda change: published.append(change["new"]), "result")
    state.image = Image.open(CASTLE)
    deadline = time.monotonic() + 300
    while not any(r.sweep is not None and not r.sweep.complete for r in published):
        assert time.monotonic() < deadline, "no partial sweep was shown"
        session._drain()
        time.sleep(0.01)
    first = next(r for r in published if r.sweep is not None)
    assert len(first.sweep.alphas) == SWEEP_CHUNK
    layer = first.graph.layers[-2]
    state.selected = (layer, first.graph.nodes[layer][0].index)
    session.wait()
    with_neuron = [r for r in published if r.neuron is not None]
    assert with_neuron[0].sweep is None or not with_neuron[0].sweep.complete, "the neuron waited for the sweep"
    resumed = [len(r.sweep.alphas) for r in with_neuron if r.sweep is not None]
    assert resumed[0] > SWEEP_CHUNK and resumed[-1] == len(DEFAULT_ALPHAS), resumed
    result = state.result
    assert result.complete
    at_once = threshold_sweep(result.bundle.explanation, result.layer)
    assert result.sweep.mse == pytest.approx(at_once.mse, rel=1e-4, abs=1e-9)
    assert result.sweep.optimal_alpha == at_once.optimal_alpha


def test_vanishing_relevance_is_said_in_words_and_draws_no_paths():
    """Untrained MobileNet V2's class score is ~1e-9 and ShuffleNet V2's relevance dies out before the input: the
    status line says so, the graph draws no paths and the readout no sweep figures; VGG-11's does not vanish."""
    for model, why in (("mobilenet_v2", "the class score is"), ("shufflenet_v2_x0_5", "the relevance vanishes")):
        explorer = Explorer(model=model, weights="random", image="castle", background=False)
        assert explorer.state.bundle.vanishing.startswith(why), explorer.state.bundle.vanishing
        assert f'class="lrp-vanishing"' in explorer.status.message.value and why in explorer.status.message.value
        assert red_edges(explorer) == set() and "no paths: the relevance vanishes" in explorer.graph.legend.value
        assert explorer.state.result.paths == () and "no paths" in explorer.activation.caption.value
        readout = explorer.threshold.readout.value
        assert "no sweep to read" in readout and "optimal α" not in readout
    explorer = Explorer(model="vgg11", weights="random", image="castle", background=False)
    assert explorer.state.bundle.vanishing is None and "lrp-vanishing" not in explorer.status.message.value
    assert red_edges(explorer) == path_edge_ids(explorer.state.result.paths) != set()
    assert "optimal α" in explorer.threshold.readout.value


def fresh_checks(explorer) -> None:
    """Every view shows the current request, equal to a fresh explanation of it."""
    state, session = explorer.state, explorer.session
    result = state.result
    request = session.request
    assert result.request == request and result.complete and not state.busy
    assert request.target in (None, result.target)
    model = session.model(request.model_name, request.weights)
    fresh = Bundle.explain(model, state.image, request.target, top_n=request.top_n)
    assert fresh.target == result.target
    scale = fresh.input_relevance.abs().max()
    assert torch.allclose(result.bundle.input_relevance, fresh.input_relevance, atol=1e-5 * scale)
    masked = fresh.masked_relevance(result.layer, request.alpha)
    assert torch.allclose(result.masked_relevance, masked, atol=1e-5 * scale)
    assert [n.id for layer in fresh.graph().layers for n in fresh.graph().nodes[layer]] == \
           [n.id for layer in result.graph.layers for n in result.graph.nodes[layer]]
    assert [p.nodes for p in fresh.paths(request.k)] * (not fresh.vanishing) == [p.nodes for p in result.paths]
    # what each view shows
    assert explorer.classes.choice.value == result.target
    indices = explorer.classes._indices  # a class outside the top-5 is in the dropdown, not among the bars
    assert explorer.classes.bars.selected is None if result.target not in indices else \
        list(explorer.classes.bars.selected) == [indices.index(result.target)]
    # every caption names the class, the image and the model; no view is dimmed
    named = f"class <b>{escape(result.class_name)}</b> · {escape(short(request.image_name))} · {request.model_name}"
    for caption in (explorer.relevance.caption, explorer.activation.caption, explorer.graph.legend,
                    explorer.threshold.readout, explorer.threshold.sweep_caption,
                    *([explorer.deconv.label] if request.selected else [])):
        assert named in caption.value, (named, caption.value)
    dimmed = [view for view in (explorer.relevance, explorer.activation, explorer.graph, explorer.threshold,
                                explorer.threshold.sweep_view, explorer.deconv, explorer.classes)
              if "lrp-stale" in view._dom_classes]
    assert dimmed == []
    assert explorer.graph.cytoscape.graph.nodes[-1].data["label"] == model.category(result.target)
    assert red_edges(explorer) == path_edge_ids(result.paths)
    assert explorer.threshold.layer.value == result.layer
    assert np.array_equal(decoded(explorer.relevance.figure),
                          relevance_overlay(result.bundle.grey_picture, result.masked_relevance, state.opacity))
    if request.selected:
        assert f"{request.selected[0]}</b> ({result.bundle.layer_name(request.selected[0])}) neuron " \
               f"<b>{request.selected[1]}" in explorer.deconv.label.value


def test_fifty_interleaved_changes_end_with_every_view_on_the_last_request():
    """Random changes of image, class, layer, α, k and neuron from the kernel's event loop while the worker
    computes; results are published on that loop, never from the worker."""
    rng = random.Random(7)

    async def scenario():
        explorer = Explorer(model="vgg11", weights="random", image="castle")
        state, session = explorer.state, explorer.session
        threads = set()
        state.observe(lambda change: threads.add(threading.get_ident()), "result")
        session.wait()
        layers = state.bundle.conv_layers
        for _ in range(50):
            what = rng.choice(["image", "class", "class", "layer", "alpha", "alpha", "k", "neuron"])
            if what == "image":
                explorer.picker.examples.value = rng.choice(["castle", "barn", "zebra"])
            elif what == "class" and state.result is not None:
                explorer.classes.bars.selected = np.array([rng.randrange(5)])
            elif what == "layer":
                state.layer = rng.choice(layers)
            elif what == "alpha":
                state.alpha = rng.choice([-2.0, -1.0, -0.25, 0.5, 1.0, 2.0])
            elif what == "k":
                state.k = rng.randint(1, 6)
            elif what == "neuron" and state.result is not None and state.result.graph is not None:
                layer = rng.choice(state.result.graph.layers[:-1])
                click(explorer, layer, rng.choice(state.result.graph.nodes[layer]).index)
            await asyncio.sleep(rng.choice([0, 0, 0.01, 0.05, 0.3]))
        for _ in range(600):  # the loop publishes the last results
            if session.request == getattr(state.result, "request", None) and state.result.complete \
                    and not state.busy:
                break
            await asyncio.sleep(0.1)
        session.wait()
        assert threads == {threading.get_ident()}
        return explorer

    explorer = asyncio.run(scenario())
    assert explorer.session._loop is not None
    fresh_checks(explorer)


def test_two_quick_class_clicks_show_the_second_and_file_each_under_its_own_class():
    explorer = Explorer(model="vgg11", weights="random", image=str(CASTLE))
    state, session = explorer.state, explorer.session
    session.wait()
    top = [p["index"] for p in state.bundle.predictions]
    explorer.classes.bars.selected = np.array([1])
    explorer.classes.bars.selected = np.array([3])
    session.wait()
    assert state.result.target == top[3]
    fresh_checks(explorer)
    explorer.classes.choice.value = top[1]
    session.wait()
    assert state.result.target == top[1] == int(state.bundle.explanation.targets[0])
    fresh_checks(explorer)


def test_the_readme_example_of_a_view_alone_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        namespace = run_readme_example("works alone on an `ExplorerState`")
    state = namespace["state"]
    assert state.result.class_name == "castle (483)" and state.result.complete
    assert "class <b>castle (483)</b>" in namespace["heatmap"].caption.value
    assert len(namespace["graph"].cytoscape.graph.nodes) == 8 * 15 + 1 + 16


def test_clicking_a_sweep_point_sets_alpha(explorer):
    state = explorer.state
    sweep = state.result.sweep
    explorer.threshold._point_clicked(explorer.threshold.points, {"data": {"index": 4}})  # bqplot's click message
    assert state.alpha == sweep.alphas[4] == state.result.request.alpha
    assert list(explorer.threshold.marker.x) == [sweep.alphas[4]] * 2
    assert list(explorer.threshold.optimum.x) == [sweep.optimal_alpha] * 2
    state.alpha = 1.0


def test_resend_sends_the_state_of_every_widget_on_screen(explorer, monkeypatch):
    """What Voila's page asks for once its views exist (updates sent while it built them were dropped)."""
    from ipywidgets import Widget

    sent = set()
    monkeypatch.setattr(Widget, "send_state", lambda self, key=None: sent.add(self.model_id))
    explorer.resync.click()
    graph = explorer.graph.cytoscape.graph
    shown = [explorer.graph.legend, explorer.relevance.caption, explorer.activation.caption, explorer.status,
             *graph.nodes, *graph.edges, explorer.classes.bars, explorer.threshold.sweep_view, *explorer.threshold.plot.marks]
    assert {w.model_id for w in shown} <= sent


class TinyNet(nn.Module):
    """A user's own network: 32×32 inputs, three classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 8 * 8, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


TINY_PREPROCESS = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
                                      transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
TINY_CLASSES = ["cat", "dog", "ship"]


def test_the_explorer_explains_your_own_network_at_its_input_size(monkeypatch):
    def no_torchvision(*args, **kwargs):
        raise AssertionError("a model was loaded from torchvision")

    net = TinyNet()
    explorer = Explorer(model=net, preprocess=TINY_PREPROCESS, categories=TINY_CLASSES, weights="random",
                        image=str(CASTLE), background=False)
    state, result = explorer.state, explorer.state.result
    assert (state.model_name, state.weights) == ("TinyNet", "own") and result.bundle.model.module is net
    assert result.complete and state.error == "" and explorer.status.banner.value == ""  # own weights: no banner
    assert sorted(x.split(" (")[0] for x in explorer.classes.bars.x) == TINY_CLASSES
    assert explorer.graph.cytoscape.graph.nodes[-1].data["label"] == TINY_CLASSES[result.target]
    assert (explorer.models.family.value, explorer.models.variant.value) == ("your model", "TinyNet")
    for figure in (explorer.relevance.figure, explorer.activation.figure):  # the heatmaps of a 32×32 input
        assert decoded(figure).shape == (32, 32, 3) and not figure.blank
    assert np.array_equal(decoded(explorer.relevance.figure),
                          relevance_overlay(result.bundle.grey_picture, result.masked_relevance, state.opacity))
    click(explorer, result.graph.layers[1], result.graph.nodes[result.graph.layers[1]][0].index)
    assert decoded(explorer.deconv.relevance).shape == (32, 32, 3)
    fresh_checks(explorer)
    # a torchvision model from the picker (with the Explorer's weights), then yours again: nothing reloaded
    assert result.layer == "features.3"  # TinyNet's last conv, VGG11's conv2_1
    explorer.models.family.value = "VGG"
    assert (state.result.bundle.model.name, state.weights) == ("vgg11", "random")
    assert state.result.layer == "features.18"  # another network: α at its last layer
    monkeypatch.setattr("lrp_widgets.views.session.load_model", no_torchvision)
    explorer.models.family.value = "your model"
    assert state.result.bundle.model.module is net and state.weights == "own"
    assert decoded(explorer.relevance.figure).shape == (32, 32, 3)


def test_picking_a_model_explains_it_in_every_view():
    """Family then depth at once (the first is superseded, never shown), ResNet's blocks in the graph and the α
    layer, a neuron of a block; then another depth and at once a class: every view ends on the last request."""
    explorer = Explorer(model="vgg11", weights="random", image=str(CASTLE))
    state, session, picker = explorer.state, explorer.session, explorer.models
    session.wait()
    shown, statuses = [], []
    state.observe(lambda change: shown.append(change["new"].bundle.model.name), "result")
    state.observe(lambda change: statuses.append(change["new"]), "status")
    picker.family.value = "ResNet"
    assert state.model_name == "resnet18" and list(picker.variant.options) == list(FAMILIES["ResNet"])
    picker.variant.value = "resnet50"
    vgg = state.result.graph  # on screen until ResNet-50's first result: a click on it chooses nothing
    click(explorer, vgg.layers[2], vgg.nodes[vgg.layers[2]][0].index)
    assert state.selected == () and "⚠ vgg11:" in explorer.status.banner.value  # the banner names the model on screen
    session.wait()
    result = state.result
    assert set(shown) == {"resnet50"} and result.bundle.model.name == "resnet50" and state.weights == "random"
    assert "resnet50: random (untrained) weights" in explorer.status.banner.value
    assert "loading resnet50 (random weights)…" in statuses
    fresh_checks(explorer)
    assert result.layer == result.graph.layers[-2] == state.layer == explorer.threshold.layer.value
    blocks = [f"layer{stage}.{block}" for stage, count in enumerate((3, 4, 6, 3), 1) for block in range(count)]
    names = [result.bundle.layer_name(layer) for layer in result.graph.layers]
    headers = [n.data["label"].split("\n")[0] for n in explorer.graph.cytoscape.graph.nodes if "index" not in n.data]
    layers = [label.split(" (")[0] for label, _ in explorer.threshold.layer.options]
    layer = result.graph.layers[5]
    click(explorer, layer, result.graph.nodes[layer][2].index)
    session.wait()
    assert f"{layer}</b> (layer2.2) neuron" in explorer.deconv.label.value and not explorer.deconv.deconvolution.blank
    fresh_checks(explorer)
    # another depth, and a class of the chart on screen (ResNet-50's) before ResNet-18 is explained
    shown.clear()
    picker.variant.value = "resnet18"
    explorer.classes.bars.selected = np.array([2])
    chosen = explorer.classes._indices[2]
    session.wait()
    assert set(shown) == {"resnet18"} and state.result.target == chosen and state.result.request.selected == ()
    assert (picker.family.value, picker.variant.value) == ("ResNet", "resnet18")
    fresh_checks(explorer)
    # ResNet-50's columns and α layers are its blocks, by name (the engine's display names)
    assert headers == names == blocks + ["fc"] and layers == blocks


def test_the_readme_example_of_your_own_network_runs():
    namespace = run_readme_example("## Explore your own network")
    explorer = namespace["explorer"]
    explorer.session.wait()
    result = explorer.state.result
    assert result.complete and result.bundle.model.module is namespace["net"] and result.request.weights == "own"
    categories = result.bundle.model.categories
    assert len(categories) == 10 and result.class_name == f"{categories[result.target]} ({result.target})"
    assert (explorer.models.family.value, explorer.models.variant.value) == ("your model", "Sequential")
    assert decoded(explorer.relevance.figure).shape == decoded(explorer.activation.figure).shape == (32, 32, 3)


def test_the_explorer_takes_your_networks_mean_and_std_for_zb():
    """z^B's pixel bounds come from the mean/std given with your network: they reach the explainer, and the
    relevance is that of an explanation with those bounds, not ImageNet's."""
    from lrp_widgets.engine import Explainer, pixel_bounds
    from lrp_widgets.engine.models import LoadedModel
    from lrp_widgets.errors import ModelError

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    net = TinyNet()
    explorer = Explorer(model=net, preprocess=TINY_PREPROCESS, mean=mean, std=std, categories=TINY_CLASSES,
                        image=str(CASTLE), background=False)
    bundle = explorer.state.result.bundle
    assert (bundle.model.mean, bundle.model.std) == (mean, std)
    [explainer] = bundle.model.explainers.values()
    assert explainer.composite.bounds == pixel_bounds(mean, std)
    inputs = bundle.explanation.inputs
    target = bundle.target
    ours = Explainer(LoadedModel.of(net, mean=mean, std=std)).explain(inputs, target).relevances["input"]
    imagenet = Explainer(LoadedModel.of(net)).explain(inputs, target).relevances["input"]
    scale = bundle.input_relevance.abs().max()
    assert (bundle.input_relevance - ours[0]).abs().max() < 1e-5 * scale
    assert (bundle.input_relevance - imagenet[0]).abs().max() > 0.05 * scale
    with pytest.raises(ModelError, match="mean, std go with a network of yours"):
        Explorer(model="vgg11", mean=mean, std=std, image=None)
