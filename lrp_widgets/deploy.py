"""Settings for a shared Voila server (``lrp-widgets app``, Binder, JupyterHub): one kernel per visitor,
as many kernels as the memory holds, memory given back when a page goes.

:func:`configure` applies them to a traitlets config; ``share/jupyter_config/voila.py`` (Voila) and
``jupyter_server_config.py`` (the Jupyter server, Voila as its extension) call it. ``lrp-widgets app`` and
``binder/start`` put that folder on the Jupyter config path, so the app and a Binder launch run with the same
settings.

>>> parse_bytes("600M"), parse_bytes("1.5G"), parse_bytes("1048576")
(629145600, 1610612736, 1048576)
>>> default_max_kernels(memory=2 * 2**30, budget=KERNEL_BUDGET)
2
"""
from __future__ import annotations

import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async
from tornado import web
from traitlets import Int
from traitlets.config import Config

#: Anonymous memory budgeted for one visitor's kernel (VGG16, CPU torch): between a kernel after its first
#: explanation (509 MiB, the per-visitor slope in docs/benchmarks.md, "binder") and one after a teaching
#: session that keeps two explanations (≈ 670 MiB); most kernels of a class are somewhere in between.
KERNEL_BUDGET = 600 * 2**20
#: What the server needs besides its kernels: Jupyter server + Voila, and the weights' file pages that
#: every kernel maps (VGG16: 528 MB; reclaimable, but evicting them makes every kernel read them again).
SERVER_BUDGET = 700 * 2**20
#: An idle kernel with no page connected is shut down after this many seconds (a closed tab, a lost network).
CULL_DISCONNECTED_S = 45
#: How often the culler looks (so a closed page's memory is back within about a minute).
CULL_INTERVAL_S = 15
#: An idle kernel whose page is still open is kept; set ``cull_connected`` to cull those too.
CULL_IDLE_S = 600
#: How long Voila waits for the app cell's output after the cell finished. nbclient's 4 s default was too
#: short with 20 visitors arriving at once on 2 cores: the page was then sent without the app (blank).
IOPUB_TIMEOUT_S = 120
#: the largest websocket message the server takes: an upload of three times the largest image accepted
#: (``engine.images.MAX_BYTES``, not imported: the server process stays without torch)
UPLOAD_MESSAGE_BYTES = 60 * 2**20


def parse_bytes(text: str) -> int:
    """``"600M"``, ``"1.5G"``, ``"512MiB"`` or a number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"'{text}' is not a memory size (say 600M or 1.5G)")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def memory_limit() -> int:
    """The memory this process may use: its memory cgroup's limit (v1 or v2) or the machine's, the smaller."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        groups = []
    for line in groups:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.limit_in_bytes")]
        elif controllers == "":
            candidates = [Path(root, path.lstrip("/"), "memory.max") for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]
        else:
            continue
        for candidate in candidates:
            try:
                value = candidate.read_text().strip()
            except OSError:
                continue
            if value.isdigit():
                limits.append(int(value))
    return min(limits)


def default_max_kernels(memory: int | None = None, budget: int = KERNEL_BUDGET) -> int:
    """How many visitors the memory holds: (memory − the server's share) / the budget of one kernel, at least 1."""
    memory = memory_limit() if memory is None else memory
    return max(1, (memory - SERVER_BUDGET) // budget)


class BoundedKernelManager(AsyncMappingKernelManager):
    """At most ``max_kernels`` kernels; a visitor beyond gets "503: the server is full" with when to come
    back. Kernels with no page connected are shut down ``cull_disconnected`` seconds after their last
    activity (the page's own shutdown request on closing does it at once where the browser sends it)."""

    max_kernels = Int(None, allow_none=True, config=True,
                      help="most kernels (visitors) at once; 0 = no limit; default: memory / kernel_budget")
    kernel_budget = Int(KERNEL_BUDGET, config=True, help="memory (bytes) one kernel is expected to take")
    cull_disconnected = Int(CULL_DISCONNECTED_S, config=True,
                            help="seconds after which an idle kernel with no connected page is shut down")

    @property
    def limit(self) -> int:
        return default_max_kernels(budget=self.kernel_budget) if self.max_kernels is None else self.max_kernels

    async def start_kernel(self, *args, **kwargs):
        if self.limit and len(self.list_kernel_ids()) >= self.limit:
            raise web.HTTPError(503, reason=self.full_message())
        return await super().start_kernel(*args, **kwargs)

    def full_message(self) -> str:
        waits = [self.cull_disconnected - self._idle_seconds(kernel_id) for kernel_id in self.list_kernel_ids()
                 if not self._kernel_connections.get(kernel_id, 0)]
        if waits:
            seconds = max(0, min(waits)) + self.cull_interval
            when = f"a place frees in about {math.ceil(seconds / 10) * 10} seconds: try again then"
        else:
            when = "a place frees when a visitor closes their page: try again in a few minutes"
        return f"The server is full ({self.limit} visitor{'s' * (self.limit != 1)}); {when}"

    def _idle_seconds(self, kernel_id: str) -> float:
        last = getattr(self._kernels[kernel_id], "last_activity", None)  # an aware UTC datetime
        return (datetime.now(timezone.utc) - last).total_seconds() if last is not None else 0.0

    async def cull_kernel_if_idle(self, kernel_id: str):
        kernel = self._kernels.get(kernel_id)
        if (kernel is not None and not self._kernel_connections.get(kernel_id, 0)
                and getattr(kernel, "execution_state", None) != "busy"
                and self._idle_seconds(kernel_id) > self.cull_disconnected):
            self.log.info("Shutting down kernel %s: no page connected for %d s", kernel_id,
                          self._idle_seconds(kernel_id))
            await ensure_async(self.shutdown_kernel(kernel_id))
            return
        await super().cull_kernel_if_idle(kernel_id)


def set_xsrf_cookie(handler: web.RequestHandler, notebook=None, cwd: str | None = None) -> None:
    """Voila's ``prelaunch_hook``: give the page its ``_xsrf`` cookie. Voila's page posts it with the kernel
    shutdown request it sends on closing; Voila never sets it itself, so that request failed (403) and a
    closed page's kernel stayed until culled."""
    handler.xsrf_token  # noqa: B018 - reading it sets the cookie


def configure(c: Config, max_kernels: int | None = None, kernel_budget: int | None = None) -> Config:
    """The shared-server settings on ``c`` (a ``voila.py`` / ``jupyter_server_config.py`` config): no
    tracebacks or sources in the browser, the ``lrp`` template, bounded and culled kernels."""
    manager = f"{__name__}.BoundedKernelManager"
    c.VoilaConfiguration.show_tracebacks = False
    c.VoilaConfiguration.strip_sources = True
    c.VoilaConfiguration.template = "lrp"
    c.VoilaConfiguration.prelaunch_hook = set_xsrf_cookie
    c.VoilaExecutor.iopub_timeout = IOPUB_TIMEOUT_S
    c.VoilaConfiguration.multi_kernel_manager_class = manager  # Voila on its own
    c.ServerApp.kernel_manager_class = manager  # Voila as a Jupyter server extension (Binder, JupyterHub)
    c.MappingKernelManager.cull_idle_timeout = CULL_IDLE_S
    c.MappingKernelManager.cull_interval = CULL_INTERVAL_S
    c.MappingKernelManager.cull_connected = False
    # an upload reaches the kernel as one websocket message: tornado's default limit (10 MiB) closed the connection
    # on larger images without a word; now every image up to well past MAX_BYTES arrives (and one over MAX_BYTES
    # is refused in words)
    for app in (c.Voila, c.ServerApp):
        app.tornado_settings = {**app.get("tornado_settings", {}), "websocket_max_message_size": UPLOAD_MESSAGE_BYTES}
    if max_kernels is not None:
        c.BoundedKernelManager.max_kernels = max_kernels
    if kernel_budget is not None:
        c.BoundedKernelManager.kernel_budget = kernel_budget
    return c
