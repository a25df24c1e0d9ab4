"""Deployment limits for a shared Voila server: one kernel per visitor, at most ``max_kernels`` at once.

Used by ``lrp-widgets app --max-kernels N`` through Voila's ``multi_kernel_manager_class`` setting;
a visitor beyond the limit gets "503: the server is full" instead of a kernel.
"""
from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Int


class BoundedKernelManager(AsyncMappingKernelManager):
    max_kernels = Int(8, config=True, help="most kernels (visitors) at once; 0 = no limit")

    async def start_kernel(self, *args, **kwargs):
        if self.max_kernels and len(self.list_kernel_ids()) >= self.max_kernels:
            raise web.HTTPError(503, reason=f"The server is full ({self.max_kernels} visitors), try again in a few minutes")
        return await super().start_kernel(*args, **kwargs)
