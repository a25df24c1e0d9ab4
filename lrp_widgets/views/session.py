"""Turns the state's inputs into results, in the background.

A change of image, class, model or weights starts a job on one worker thread: load the model (cached),
explain (cached per image, class, model, weights), publish the bundle — views show the full
explanation at once — then compute the graph and paths (``paths_revision``) and the α sweep of the chosen
layer (``sweep_ready``). A newer request supersedes an older one: stale results are dropped. Errors
become a one-line ``state.error``; the previous explanation stays.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from ..analysis.bundle import Bundle
from ..engine.models import LoadedModel, UntrainedWeightsWarning, load_model
from ..errors import LRPWidgetsError
from .state import ExplorerState

log = logging.getLogger(__name__)


def _release_freed_memory() -> None:
    """Hand the heap memory freed by a job back to the OS (glibc keeps it otherwise): several kernels
    share one server."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def image_key(image) -> str:
    return hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()


class Session:
    """Observes ``state``; ``background=False`` runs every job inline (tests, benchmarks).

    Keeps the ``cache_size`` most recent explanations (~200 MB each for VGG16) for instant returns.
    """

    def __init__(self, state: ExplorerState, background: bool = True, device: str = "cpu", cache_size: int = 2):
        self.state = state
        self.device = device
        self.cache_size = cache_size
        self.models: dict[tuple[str, str], LoadedModel] = {}
        self.bundles: dict[tuple, Bundle] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lrp-widgets") if background else None
        self.last_job: Future | None = None
        state.observe(self._explain, ["image", "model_name", "weights", "target", "top_n"])
        state.observe(self._paths, ["k"])
        state.observe(self._sweep, ["layer"])

    # scheduling -----------------------------------------------------------------------------------
    def _submit(self, job: Callable[[int], None], supersede: bool = True) -> None:
        with self._lock:
            if supersede:
                self._generation += 1
            generation = self._generation
        if self._executor is None:
            self._run(job, generation)
        else:
            self.last_job = self._executor.submit(self._run, job, generation)

    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def _run(self, job: Callable[[int], None], generation: int) -> None:
        state = self.state
        state.busy = True
        try:
            job(generation)
        except LRPWidgetsError as error:
            state.error = str(error)
        except Exception as error:  # noqa: BLE001 - the user gets one line, the log gets the traceback
            log.exception("job failed")
            state.error = f"unexpected error ({type(error).__name__}: {error}); the previous result is kept"
        finally:
            if self._current(generation):
                state.busy = False
                state.status = ""
            _release_freed_memory()

    def wait(self) -> None:
        """Block until the queued jobs are done."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    # jobs -----------------------------------------------------------------------------------------
    def _explain(self, change=None) -> None:
        if self.state.image is None:
            return
        if change is not None and change["name"] in ("image", "model_name", "weights") and self.state.target is not None:
            self.state.target = None  # a new image or model: explain its own top-1 (this re-triggers)
            return
        self._submit(self._explain_job)

    def _explain_job(self, generation: int) -> None:
        state = self.state
        model = self.model(state.model_name, state.weights)
        image = image_key(state.image)
        bundle = self.bundles.get((image, state.target, model.name, model.weights, state.top_n))
        if bundle is None:
            state.status = f"explaining {state.image_name or 'the image'} with {model.name}…"
            bundle = Bundle.explain(model, state.image, state.target, top_n=state.top_n)
            for target in {state.target, bundle.target}:  # the top-1 is also its own class
                self.bundles[image, target, model.name, model.weights, state.top_n] = bundle
            self._forget_old_bundles()
        if not self._current(generation):
            return
        state.error = ""  # a new explanation replaces whatever went wrong before
        state.pretrained = model.pretrained
        if state.layer not in bundle.conv_layers:
            with state.hold_trait_notifications():  # no sweep of the old explanation at the new layer
                state.layer = bundle.conv_layers[-1]
                state.bundle = bundle
        state.sweep_ready = bundle.has_sweep(state.layer)
        state.selected = ()
        state.bundle = bundle
        self._paths_job(generation)
        self._sweep_job(generation)

    def _forget_old_bundles(self) -> None:
        distinct = list(dict.fromkeys(self.bundles.values()))  # insertion order: oldest first
        for old in distinct[:-self.cache_size]:
            for key in [key for key, bundle in self.bundles.items() if bundle is old]:
                del self.bundles[key]

    def _paths(self, change=None) -> None:
        if self.state.bundle is not None:
            self._submit(self._paths_job, supersede=False)

    def _paths_job(self, generation: int) -> None:
        bundle, k = self.state.bundle, self.state.k
        self.state.status = "finding the best paths…"
        bundle.paths(k)
        bundle.union_relevance(k)
        bundle.path_relevance(k)
        bundle.path_activation(k)
        if self._current(generation) and bundle is self.state.bundle:
            self.state.paths_revision += 1

    def _sweep(self, change=None) -> None:
        if self.state.bundle is not None:
            self.state.sweep_ready = self.state.bundle.has_sweep(self.state.layer)
            self._submit(self._sweep_job, supersede=False)

    def _sweep_job(self, generation: int) -> None:
        bundle, layer = self.state.bundle, self.state.layer
        self.state.status = f"threshold sweep at {layer}…"
        bundle.sweep(layer)
        if bundle is self.state.bundle and layer == self.state.layer:
            self.state.sweep_ready = True

    # models ---------------------------------------------------------------------------------------
    def model(self, name: str, weights: str) -> LoadedModel:
        key = (name, weights)
        if key not in self.models:
            self.state.status = f"loading {name} ({weights} weights)…"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedWeightsWarning)
                self.models[key] = load_model(name, weights, progress=False, device=self.device)
        return self.models[key]

