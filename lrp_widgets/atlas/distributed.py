"""The atlas on a Ray cluster (``pip install lrp-widgets[ray]``): Ray Data hands the shards not yet done to a pool
of actors that each hold the model (a GPU each when the cluster has them), read their shard's images and return
its partial; the driver saves each partial as it arrives (so ``--resume`` works as on one machine) and merges them
in shard order. A shard is explained in the same batches as on one machine: the atlas is the same.

A worker lost mid-run costs only the shard it was explaining: Ray restarts the actor and retries the shard.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Callable

import numpy as np

from ..engine.models import LoadedModel
from ..errors import LRPWidgetsError
from .build import Checkpoints, Plan, ShardWorker


class ShardActor:
    """A Ray Data actor: one model, any number of shards (one a batch)."""

    def __init__(self, plan: Plan, model: LoadedModel, batch_size: int, gpu: bool):
        if gpu:
            model.module.to("cuda")
        self.worker, self.batch_size = ShardWorker(plan, model), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = self.worker.plan.shards()
        partials = [pickle.dumps(self.worker.shard(shards[int(index)], 0, self.batch_size)) for index in batch["shard"]]
        return {"shard": batch["shard"], "partial": np.array(partials, dtype=object)}


def connect(address: str):
    """``ray.init`` on the cluster at ``address`` (``auto``: the one this machine belongs to), or one line on why not."""
    try:
        import ray
    except ModuleNotFoundError:
        raise LRPWidgetsError("--ray needs Ray on this machine: pip install 'lrp-widgets[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise LRPWidgetsError(f"no Ray cluster at '{address}': {message}") from None
    return ray


def run_ray(plan: Plan, model: LoadedModel, checkpoints: Checkpoints, address: str, batch_size: int,
            progress: Callable[[int], None]) -> None:
    """Explain the shards not yet done on the cluster, saving each as it comes back."""
    ray = connect(address)
    shards = plan.shards()
    pending = [index for index in range(len(shards)) if index not in checkpoints.done]
    if not pending:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = max(1, min(len(pending), gpus or int(resources.get("CPU", 1))))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False  # our progress bar says it
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    shipped = dataclasses.replace(model, explainers={})  # the traced networks are made again in each actor
    dataset = ray.data.from_items([{"shard": index} for index in pending], override_num_blocks=len(pending))
    results = dataset.map_batches(ShardActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                                  num_gpus=1 if gpus else 0,
                                  num_cpus=1, fn_constructor_args=(plan, shipped, batch_size, bool(gpus)),
                                  max_restarts=-1, max_task_retries=-1)
    for row in results.iter_rows():
        index = int(row["shard"])
        checkpoints.save(index, pickle.loads(row["partial"]))
        progress(len(shards[index]))
