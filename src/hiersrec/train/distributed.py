"""Data-parallel training over processes with ``torch.distributed``: the process group, ranks and shards.

A run started by ``torchrun`` (or ``hiersrec train --nproc N``, which starts torchrun) finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment; `process_group`
joins the group they describe (gloo on CPU, NCCL on CUDA, one GPU per local rank). Without them, or with a
world size of 1, nothing here is active: `world` says rank 0 of 1 and training takes its single-process path.

How the work is split, so that W processes compute what one process computes on the same global batches:

* Training: every rank builds the same shuffled batch list of an epoch (its order depends on the epoch seed
  only); step ``s`` is the global batch made of batches ``s * W .. s * W + W - 1``, of which rank ``r``
  takes batch ``s * W + r`` (`rank_steps`). No batch is dropped: in the last step, ranks left without a
  batch run a stand-in whose loss weight is 0, so that step is the global batch of the batches that remain.
  Each rank's mean loss is weighted by its share of the step's targets (times W, as DDP averages gradients
  over ranks): the gradient is that of the mean loss over all targets of the global batch.
* Validation: the validation batches are dealt out in turn; each rank returns the metric sums of its
  batches, and their all-reduced sums are divided once by the all-reduced case count (no mean of means,
  no padded cases counted).
* Files: rank 0 alone writes the run directory; `run_on_main` runs such work there and hands its result,
  or its error, to every rank.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hiersrec.errors import ConfigError

# A rank that waits this long for another (a crashed or stuck peer) raises instead of hanging. Ranks only
# wait on each other for seconds in a healthy run: steps, validation and rank 0's writes are all short.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0 .. size - 1 (0 writes the run directory).
        size: number of processes (1: a plain single-process run).
        local_rank: rank on this machine (selects the GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True for rank 0, the process that writes files and prints."""
        return self.rank == 0


def world() -> World:
    """This process's `World`: from the process group when one is joined, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def launched_world_size() -> int:
    """The world size torchrun gave this process (``WORLD_SIZE``; 1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run of several processes, else ``device``."""
    current = world()
    if current.size > 1 and device.type == "cuda":
        return torch.device("cuda", current.local_rank)
    return device


@contextmanager
def process_group(device: torch.device, timeout: timedelta = PROCESS_GROUP_TIMEOUT) -> Iterator[World]:
    """Join the process group described by the environment for the ``with`` block (a no-op for one process).

    Args:
        device: the configured training device: NCCL for CUDA (each rank on ``cuda:LOCAL_RANK``), gloo else.
        timeout: how long a collective waits for a missing rank before raising.

    Yields:
        This process's `World`.
    """
    if launched_world_size() == 1:
        yield World()
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: train with one process")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # NCCL and broadcast_object_list use this device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def check_data_parallel(neural: bool, searching: bool, n_processes: int) -> None:
    """Refuse runs that several processes cannot share.

    Raises:
        ConfigError: more than one process for a fitted model or a hyperparameter search.
    """
    if n_processes > 1 and not neural:
        raise ConfigError("fitted models are fitted by one process: train them without --nproc or torchrun")
    if n_processes > 1 and searching:
        raise ConfigError("a hyperparameter search runs in one process: drop --nproc (or torchrun)")


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in `DistributedDataParallel` when there are several processes, else ``model`` itself."""
    if world().size == 1:
        return model
    # Every parameter of the registered models takes part in the loss: no search for unused ones per step.
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


@dataclass(frozen=True)
class RankStep:
    """This rank's part of one global training step.

    Attributes:
        rows: the training rows of this rank's batch.
        share: this rank's fraction of the step's targets (0 for a stand-in batch, which is not counted).
        n_targets: targets of the whole step over all ranks.
    """

    rows: np.ndarray
    share: float
    n_targets: int


def steps_per_epoch(n_batches: int, n_processes: int) -> int:
    """Global steps of an epoch of ``n_batches`` batches: one batch per process and step, none dropped."""
    return math.ceil(n_batches / n_processes)


def rank_steps(batches: Sequence[np.ndarray], targets_per_row: np.ndarray, current: World) -> list[RankStep]:
    """This rank's batch of every global step of an epoch (see the module docstring).

    Args:
        batches: the epoch's batch list (row indices), the same on every rank.
        targets_per_row: training targets of each row.
        current: this process's place (`world`).
    """
    steps = []
    for first in range(0, len(batches), current.size):
        group = batches[first : first + current.size]
        counts = [int(targets_per_row[rows].sum()) for rows in group]
        total = sum(counts)
        if current.rank < len(group):
            steps.append(RankStep(group[current.rank], counts[current.rank] / total, total))
        else:  # the last step has fewer batches than ranks: take part in DDP's reduction with weight 0
            steps.append(RankStep(group[0], 0.0, total))
    return steps


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over all ranks (``values`` itself for one process)."""
    if world().size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def run_on_main(action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 only and return its result on every rank; its error is raised on every rank.

    Every rank waits here until rank 0 is done (a barrier), so the others never run ahead of the files rank 0
    writes, and an error there (a run directory in use, a failed write) stops all ranks at once with the
    same message instead of leaving them waiting on rank 0 until the timeout.
    """
    current = world()
    if current.size == 1:
        return action()
    outcome: list[object] = [None, None]  # [result, error]
    if current.is_main:
        try:
            outcome[0] = action()
        except Exception as error:  # noqa: BLE001 - sent to the other ranks, then raised here too
            outcome[1] = error if _picklable(error) else RuntimeError(f"on rank 0: {error!r}")
            _broadcast(outcome)
            raise
    _broadcast(outcome)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def _broadcast(objects: list[object]) -> None:
    dist.broadcast_object_list(objects, src=0)


def _picklable(error: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure means: send a plain copy instead
        return False
    return True


def launch_local(n_processes: int, args: Sequence[str]) -> int:
    """Run ``python -m hiersrec ARGS`` in ``n_processes`` processes on this machine through torchrun.

    Returns:
        torchrun's exit status (0 when every process succeeded).
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}"]
    return subprocess.run([*command, "--module", "hiersrec", *args], check=False).returncode
