"""The app's data flow, in one file: inputs → :class:`Request` → :class:`Session` → :class:`Result` → views.

1. Controls write *inputs* to the :class:`~lrp_widgets.views.state.ExplorerState` (image, model, weights,
   class, layer, α, k, the selected neuron). The model is one of torchvision's, loaded by name, or one the
   session was given (:meth:`Session.add_model`: a user's own network, weights "own"). Each change makes an
   immutable :class:`Request`: the inputs at that moment. It is the *current* request until the next change
   (latest wins).
2. The :class:`Session` computes a request in stages — model, explanation, Algorithm 1 at the α layer,
   the neuron graph, the k best paths and their heatmaps, the selected neuron, the α sweep last — on one
   worker thread, into caches keyed by what each part depends on (the image's content, the class, the
   model, the layer …; never by mutable state). A request whose parts are all cached is answered at
   once on the kernel's thread. A newer request stops an older one at its next stage, or within the sweep at
   its next chunk of α values (``SWEEP_CHUNK``; the chunks done stay cached: the newer request's sweep
   resumes there), so a click during the sweep waits for one chunk at most.
3. After each slow stage (over ``PUBLISH_AFTER_S``; quick ones go with the next) and at the end, a
   :class:`Result` — the request and all that is computed for it so far — is *published*: queued by the worker and set as ``state.result`` on the kernel's event loop, never from
   the worker. A result (or status, or error) whose request is no longer current is dropped.
4. Views render ``state.result`` and the display choices (opacity, heatmap mode). They never compute. A view
   whose part of the result is not yet the current request's (``state.request``, set at once) is dimmed.

Outside a kernel (a script, a test) nothing runs an event loop: :meth:`Session.wait` runs the queued
publications itself. A failed request shows one line in ``state.error`` and puts the inputs back to
what is on screen.
"""
from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import torch
from PIL import Image

from ..analysis.bundle import Bundle, NotCached, cached_only
from ..analysis.graph import NeuronGraph, channel_relevance
from ..analysis.paths import Path
from ..analysis.threshold import Selection, Sweep
from ..engine.deconv import deconvnet_gap
from ..engine.models import LoadedModel, UntrainedWeightsWarning, load_model
from ..errors import LRPWidgetsError, ModelError
from .state import INPUTS, ExplorerState

if TYPE_CHECKING:  # the atlas (and pyarrow) is imported only by a session that has one
    from ..atlas.thumbnails import ReferenceImages, Strip

log = logging.getLogger(__name__)


def image_key(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """What to show: the inputs at one moment. Equal requests have equal results."""

    image_key: str
    model_name: str
    weights: str
    target: int | None
    top_n: int
    layer: str
    alpha: float
    k: int
    selected: tuple = ()
    statistic: str = "relevance_sum"
    image_name: str = field(default="", compare=False)
    image: Image.Image | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, state: ExplorerState, image_key: str) -> "Request":
        return cls(image_key, state.model_name, state.weights, state.target, state.top_n, state.layer, state.alpha,
                   state.k, tuple(state.selected), state.statistic, state.image_name, state.image)

    @property
    def explanation_key(self) -> tuple:
        return self.image_key, self.target, self.model_name, self.weights, self.top_n


@dataclass(frozen=True)
class Neuron:
    """The selected neuron: its relevance, deconvolution, conditioned heatmap and activation map (the last two
    ``None`` while computed: the deconvolution is shown first)."""

    layer: str
    index: int
    relevance: float
    deconvolution: torch.Tensor | None  # None where the deconvnet does not apply: ``why`` says so
    heatmap: torch.Tensor | None = None
    activation: torch.Tensor | None = None
    why: str = ""

    @property
    def complete(self) -> bool:
        return self.heatmap is not None and self.activation is not None


@dataclass(frozen=True)
class Result:
    """Everything computed for one request so far; a part still being computed is ``None``."""

    request: Request
    bundle: Bundle
    layer: str  # the α layer: the request's, or the model's last conv layer if the model has no such layer
    selection: Selection | None = None
    masked_relevance: torch.Tensor | None = None
    graph: NeuronGraph | None = None
    paths: tuple[Path, ...] | None = None
    union_relevance: torch.Tensor | None = None
    path_relevance: torch.Tensor | None = None
    path_activation: tuple[torch.Tensor, ...] | None = None  # the k paths together, then each path
    neuron: Neuron | None = None
    references: "Strip | None" = None  # the selected neuron's reference images, where the session has an atlas
    sweep: Sweep | None = None

    @property
    def target(self) -> int:
        return self.bundle.target

    @property
    def class_name(self) -> str:
        return f"{self.bundle.model.category(self.target)} ({self.target})"

    @property
    def complete(self) -> bool:
        return self.sweep is not None and self.sweep.complete and (
            self.neuron.complete if self.neuron is not None else not self.request.selected)


# the stages after the explanation, in the order they are computed and shown: what is on screen first
def _alpha(result: Result) -> Result:
    bundle, alpha = result.bundle, result.request.alpha
    return replace(result, selection=bundle.selection(result.layer, alpha),
                   masked_relevance=bundle.masked_relevance(result.layer, alpha))


def _graph(result: Result) -> Result:
    return replace(result, graph=result.bundle.graph())


def _paths(result: Result) -> Result:
    bundle, k = result.bundle, result.request.k
    if bundle.vanishing:  # no relevance flows: no path is best
        return replace(result, paths=(), path_activation=(None,))
    paths = tuple(bundle.paths(k))
    return replace(result, paths=paths, union_relevance=bundle.union_relevance(k),
                   path_relevance=bundle.path_relevance(k),
                   path_activation=(bundle.path_activation(k),) + tuple(bundle.path_activation(k, i)
                                                                        for i in range(len(paths))))


def _neuron(result: Result) -> Iterator[Result]:
    """Its deconvolution first (what a click asks to see), then its relevance and activation maps."""
    if not result.request.selected:
        yield result
        return
    bundle, (layer, index) = result.bundle, result.request.selected
    relevance = float(channel_relevance(bundle.explanation, layer)[index])
    why = deconvnet_gap(bundle.explanation, layer)
    neuron = Neuron(layer, index, relevance, None if why else bundle.deconvolution(layer, index), why=why)
    yield replace(result, neuron=neuron)
    yield replace(result, neuron=replace(neuron, heatmap=bundle.neuron_relevance(layer, index),
                                         activation=bundle.neuron_activation(layer, index)))


def _references(images: ReferenceImages, result: Result) -> Result:
    """The selected neuron's reference images from the atlas (of the atlas's model only)."""
    from ..atlas.thumbnails import Strip

    if not result.request.selected:
        return result
    (layer, index), model, info = result.request.selected, result.bundle.model, images.atlas.info
    if (model.name, model.weights) != (info["model"], info["weights"]):
        return replace(result, references=Strip(layer, index, result.request.statistic, note=(
            f"the atlas is of {info['model']} with {info['weights']} weights: pick that model to see reference images")))
    return replace(result, references=images.strip(model, layer, index, result.request.statistic))


def _sweep(result: Result) -> Iterator[Result]:
    """Progressive and last: the first α's points, then more, while no newer request comes."""
    for sweep in result.bundle.sweep_steps(result.layer):
        yield replace(result, sweep=sweep)


#: the memory the explanations kept for going back may take (one is always kept)
CACHE_BYTES = 400 * 2**20
#: a stage that took longer is shown before the next is computed
PUBLISH_AFTER_S = 0.05
STAGES = (("Algorithm 1 at {layer}", _alpha), ("the neuron graph", _graph), ("the {k} best paths", _paths),
          ("the selected neuron", _neuron), ("the α sweep at {layer}", _sweep))


def _steps(outcome: Result | Iterator[Result]) -> Iterator[Result]:
    """A stage's results: one, or a progressive stage's steps."""
    return iter([outcome]) if isinstance(outcome, Result) else outcome


def _last(outcome: Result | Iterator[Result]) -> Result:
    *_, result = _steps(outcome)
    return result


def _release_freed_memory() -> None:
    """Hand the heap memory freed by a job back to the OS (glibc keeps it otherwise): several kernels
    share one server."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Session:
    """Computes ``state``'s requests and publishes their results; ``background=False`` computes on the
    caller's thread (scripts, tests, benchmarks). Keeps the latest explanations that fit in ``cache_bytes``
    with the models they need (VGG16: ~180 MB each, so the default keeps two of one model; an explanation of
    another model also costs that model's size; the newest is always kept), and the user's own models."""

    def __init__(self, state: ExplorerState, background: bool = True, device: str = "cpu",
                 cache_bytes: int = CACHE_BYTES, references: "ReferenceImages | None" = None):
        self.state = state
        #: the stages after the explanation; with an atlas, the selected neuron's reference images before the rest
        #: of the neuron (they are quick: what a click shows first)
        self.stages = STAGES if references is None else (
            *STAGES[:3], ("the reference images", partial(_references, references)), *STAGES[3:])
        self.device = device
        self.cache_bytes = cache_bytes
        self.models: dict[tuple[str, str], LoadedModel] = {}  # the request's, the cached explanations', the user's
        self._own: set[tuple[str, str]] = set()  # the user's own models: never forgotten (nothing to load them from)
        self.bundles: dict[tuple, Bundle] = {}
        self._keyed: tuple[Image.Image | None, str] = (None, "")  # the last image and its content key
        self._loop = running_loop()  # the kernel's event loop, where results are published
        self._publications: queue.SimpleQueue = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._current: Request | None = None  # the latest request
        self._finished: Request | None = None  # the latest request whose results are all queued
        self._adjusting = False
        self._computing_inline = False
        self._worker = threading.Thread(target=self._serve, name="lrp-widgets", daemon=True) if background else None
        if self._worker is not None:
            self._worker.start()
        state.observe(self._input_changed, list(INPUTS))
        if state.image is not None:
            self.submit()

    # the kernel's side --------------------------------------------------------------------------------
    @property
    def request(self) -> Request | None:
        """The current request."""
        return self._current

    def add_model(self, model: LoadedModel) -> None:
        """Know ``model`` (a user's own network) under its name and weights label: requests for them use it."""
        self.models[_model_key(model)] = model
        self._own.add(_model_key(model))

    def _input_changed(self, change) -> None:
        if self._adjusting:
            return
        if change["name"] in ("image", "model_name", "weights"):
            with self._adjustment():  # another picture or network: its own top-1, no neuron selected
                self.state.target = None
                self.state.selected = ()
                if change["name"] == "model_name":  # another network's layers: α at its last one
                    self.state.layer = ""
        self.state.error = ""  # a new request replaces whatever went wrong before
        self.submit()

    def submit(self) -> None:
        """Make the state's inputs the current request: answer it from the caches, or hand it to the worker."""
        state = self.state
        if state.image is None:
            return
        if self._keyed[0] is not state.image:
            self._keyed = (state.image, image_key(state.image))
        request = Request.of(state, self._keyed[1])
        with self._changed:
            self._current = request
        state.request = request  # at once: the views not showing it are dimmed until they do
        try:
            with cached_only():
                result = self._cached_result(request)
        except (NotCached, LRPWidgetsError):  # the worker computes it, or reports the error
            state.status, state.busy = "", True
            with self._changed:
                self._changed.notify_all()
            if self._worker is None:
                self._compute_inline()
            return
        with self._changed:
            self._finished = request
        self._show(result)
        state.busy, state.status = False, ""

    def _cached_result(self, request: Request) -> Result:
        if (request.model_name, request.weights) not in self.models:
            raise NotCached("model")
        bundle = self.bundles.get(request.explanation_key)
        if bundle is None:
            raise NotCached("explanation")
        result = self._first_result(request, bundle)
        for _, stage in self.stages:
            result = _last(stage(result))
        return result

    def _drain(self) -> None:
        """Apply the queued publications of the current request; drop the others (kernel's thread)."""
        while True:
            try:
                request, kind, value = self._publications.get_nowait()
            except queue.Empty:
                return
            if request != self._current:
                continue  # stale: its request is no longer the current one
            if kind == "status":
                self.state.status, self.state.busy = value, True
            elif kind == "result":
                self._show(value)
            elif kind == "done":
                self.state.busy, self.state.status = False, ""
            else:
                self._fail(request, value)

    def _show(self, result: Result) -> None:
        state = self.state
        with self._adjustment():
            state.layer = result.layer
            state.pretrained = result.bundle.model.pretrained
        state.result = result

    def _fail(self, request: Request, message: str) -> None:
        state = self.state
        state.error = message
        state.busy, state.status = False, ""
        shown = state.result
        if shown is not None and shown.request != request:  # back to what is on screen, and finish it
            with self._adjustment(), state.hold_trait_notifications():
                for name in INPUTS:
                    setattr(state, name, shown.bundle.image if name == "image" else getattr(shown.request, name))
                state.image_name = shown.request.image_name
            if shown.complete:
                with self._changed:
                    self._current = self._finished = shown.request
                state.request = shown.request
            else:
                self.submit()

    @contextmanager
    def _adjustment(self):
        """Inputs set by the session itself: no new request."""
        self._adjusting = True
        try:
            yield
        finally:
            self._adjusting = False

    def wait(self, timeout: float = 600) -> None:
        """Block until every result of the current request is published (running the publications when
        no event loop does)."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            with self._changed:
                if self._finished == self._current and self._publications.empty():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the session did not finish within {timeout} s")
                self._changed.wait(0.02)

    # the worker's side --------------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._changed:
                while self._current is None or self._current == self._finished:
                    self._changed.wait()
                request = self._current
            self._compute(request)

    def _compute_inline(self) -> None:
        if self._computing_inline:  # a publication changed an input: the running loop takes it next
            return
        self._computing_inline = True
        try:
            while self._current is not None and self._current != self._finished:
                self._compute(self._current)
                self._drain()
        finally:
            self._computing_inline = False

    def _publish(self, request: Request, kind: str, value=None, last: bool = False) -> None:
        with self._changed:
            self._publications.put((request, kind, value))
            if last:
                self._finished = request
        if self._worker is None:
            self._drain()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._drain)
        with self._changed:
            self._changed.notify_all()  # wake wait()

    def _compute(self, request: Request) -> None:
        """Compute ``request`` stage by stage; a stage that took a while is published at once (what is on
        screen first), quick ones together with the next; stop early when superseded."""
        try:
            model = self.model(request.model_name, request.weights, request)
            started, published = time.perf_counter(), None
            result = self._first_result(request, self._explanation(request, model))
            for status, stage in ((None, None), *self.stages):  # the explanation, then each stage
                steps = [result]
                if stage is not None:
                    if request != self._current:
                        return
                    self._publish(request, "status", status.format(layer=result.bundle.layer_name(result.layer),
                                                                   k=request.k) + "…")
                    started = time.perf_counter()
                    steps = _steps(stage(result))
                for result in steps:  # a progressive stage's steps: each may be the last before a newer request
                    if time.perf_counter() - started > PUBLISH_AFTER_S:  # slow: show it before the next step
                        self._publish(request, "result", result)
                        published, started = result, time.perf_counter()
                    if request != self._current:
                        return
            if published is not result:
                self._publish(request, "result", result)
            self._publish(request, "done", last=True)
        except LRPWidgetsError as error:
            self._publish(request, "error", str(error), last=True)
        except Exception as error:  # noqa: BLE001 - the user gets one line, the log gets the traceback
            log.exception("computing %s failed", request)
            self._publish(request, "error", f"unexpected error ({type(error).__name__}: {error}); "
                                            "the previous result is kept", last=True)
        finally:
            _release_freed_memory()

    def _explanation(self, request: Request, model: LoadedModel) -> Bundle:
        bundle = self.bundles.get(request.explanation_key)
        if bundle is None:
            name = request.image_name or "the image"
            what = "its top class" if request.target is None else f"class {model.category(request.target)}"
            self._publish(request, "status", f"explaining {name} for {what} with {model.name}…")
            newest = next(reversed(self.bundles.values()), None)
            self._forget_old_bundles(room=newest.explanation.nbytes if newest is not None else 0,
                                     model=_model_key(model))
            bundle = Bundle.explain(model, request.image, request.target, top_n=request.top_n)
            bundle.picture, bundle.grey_picture, bundle.predictions, bundle.layer_names, bundle.vanishing  # noqa: B018 - computed here, not while a view renders
            for target in {request.target, bundle.target}:  # the top-1 is also its own class
                self.bundles[replace(request, target=target).explanation_key] = bundle
            self._forget_old_bundles(model=_model_key(model))
        return bundle

    @staticmethod
    def _first_result(request: Request, bundle: Bundle) -> Result:
        layer = request.layer if request.layer in bundle.conv_layers else bundle.conv_layers[-1]
        return Result(request, bundle, layer)

    def _forget_old_bundles(self, room: int = 0, model: tuple[str, str] | None = None) -> None:
        """Keep the newest explanations that fit in ``cache_bytes`` with ``room`` to spare (always the newest
        when there is no room to make), and only the models they need besides ``model`` (the request's) and
        the user's own. An explanation of another model costs that model's memory too (its traced network:
        folded batch norms, modified weights); a model is cheap to load again (its weights are mapped)."""
        kept, total, counted = set(), room, {model, *self._own}
        for bundle in reversed(list(dict.fromkeys(self.bundles.values()))):  # newest first
            key = _model_key(bundle.model)
            total += bundle.explanation.nbytes + (0 if key in counted else _model_bytes(bundle.model))
            if total > self.cache_bytes and (kept or room):
                break
            kept.add(bundle)
            counted.add(key)
        self.bundles = {key: bundle for key, bundle in self.bundles.items() if bundle in kept}
        self.models = {key: loaded for key, loaded in self.models.items() if key in counted}

    def model(self, name: str, weights: str, request: Request | None = None) -> LoadedModel:
        key = (name, weights)
        if key not in self.models:
            if weights == "own":
                raise ModelError(f"no model of yours is called '{name}'")
            newest = next(reversed(self.bundles.values()), None)  # room for the next explanation, before loading
            self._forget_old_bundles(room=newest.explanation.nbytes if newest is not None else 0, model=key)
            if request is not None:
                self._publish(request, "status", f"loading {name} ({weights} weights)…")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedWeightsWarning)
                self.models[key] = load_model(name, weights, progress=False, device=self.device)
        return self.models[key]


def _model_key(model: LoadedModel) -> tuple[str, str]:
    return model.name, model.weights


def _model_bytes(model: LoadedModel) -> int:
    """What a loaded model pins besides its mapped weights, estimated as the size of its parameters and buffers
    (its traced networks hold folded or modified copies of them)."""
    return sum(t.numel() * t.element_size() for t in (*model.module.parameters(), *model.module.buffers()))


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
