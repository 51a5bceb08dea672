"""The training loop: AdamW, warm-up + decay, early stopping on validation MRR@k, checkpoints to resume.

`train` sees only the sessions to fit on and the validation sessions: the caller cannot hand it the test
split by mistake through a dataset object (see `hiersrec.train.run.TrainingData`). Every epoch ends with
a checkpoint (weights, optimiser, schedule, early-stopping state, history); the data order and dropout of
epoch ``e`` come from generators seeded with ``(seed, e)``, so a resumed run repeats exactly the epochs an
uninterrupted run would have done.

Under torchrun the same loop trains with `DistributedDataParallel` (`hiersrec.train.distributed`): a
global step is one batch of the epoch's batch list per rank, weighted so that the gradient is the one of
the mean loss over the global batch; validation is shared out and reduced exactly; rank 0 alone writes.
A run resumes with any number of processes: the checkpoint holds the unwrapped model, and when the
number changes the schedule continues at the step count the new number would have reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hiersrec.config import TrainConfig, check_item_loss
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError, TrainingDivergedError
from hiersrec.models.item_loss import ItemLoss
from hiersrec.progress import progress
from hiersrec.train import distributed
from hiersrec.train.batches import SessionWindows, iter_epoch
from hiersrec.train.checkpoint import read_checkpoint, write_checkpoint, write_log
from hiersrec.train.optim import build_optimizer, build_scheduler
from hiersrec.train.validate import validation_metrics

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training produced: the selected weights and the per-epoch history."""

    best_state: dict[str, torch.Tensor]  # weights of the epoch with the best validation metric
    best_epoch: int  # 1-based
    best_metrics: dict[str, float]  # validation metrics of that epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def train(
    model: nn.Module,
    train_sessions: SessionData,
    valid_sessions: SessionData | None,
    catalog: ItemCatalog,
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    valid_protocol: str = "all_prefixes",
    stop_after: int | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` (its ``forward(batch, target_mask)`` returns an output with ``.loss``).

    Args:
        model: e.g. `HierSRec`; moved to ``cfg.device``.
        train_sessions: sessions to fit on.
        valid_sessions: early-stopping sessions (the train tail or the source's validation split; never test);
            None to refit without selection: the last epoch's weights are kept.
        catalog: item attributes for the batches.
        cfg: training options.
        run_dir: where the per-epoch checkpoint is written (None: no checkpoint).
        resume: continue from ``run_dir``'s checkpoint.
        valid_protocol: validation cases: ``"all_prefixes"`` or ``"last_item"`` (leave-one-out data).
        stop_after: stop after this many epochs of the ``cfg.epochs`` schedule (a refit for the number of
            epochs chosen on validation); None runs them all.
        on_epoch_end: called with each epoch's record after its checkpoint is written; an exception it raises
            stops training there (`hiersrec.search` prunes a trial this way).

    The model trains with the next-item loss of ``cfg`` (``loss``, ``negatives``, ``gbce_t``,
    ``label_smoothing``), whose sampled softmax corrects by the items' click counts in ``train_sessions``; it
    keeps that ``item_loss`` afterwards.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
        ConfigError: ``cfg.loss`` cannot train this model (`hiersrec.config.check_item_loss`).
    """
    check_item_loss(model.config, cfg.loss, cfg.label_smoothing)
    model.item_loss = ItemLoss(
        cfg.loss,
        negatives=cfg.negatives,
        gbce_t=cfg.gbce_t,
        label_smoothing=cfg.label_smoothing,
        item_counts=train_sessions.item_counts(catalog.n_items),
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = distributed.world()
    device = distributed.rank_device(resolve_device(cfg.device))
    model.to(device)
    windows = SessionWindows.from_sessions(train_sessions, model.config.max_len)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (0.9, cfg.beta2))
    # Batch counts vary by a step or two between epochs; the schedule uses the first epoch's.
    total_steps = cfg.epochs * _epoch_steps(windows, cfg, 1, world.size)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_state": None}
    if resume:
        state = _restore(run_dir, model, optimizer, scheduler, device)
        if state.pop("world_size", 1) != world.size:
            _continue_schedule(scheduler, windows, cfg, state["epoch"], world.size)
    stepper = distributed.wrap_model(model, device)  # after restoring: DDP starts from rank 0's weights
    metric = f"mrr@{cfg.valid_k}"
    last_epoch = min(cfg.epochs, stop_after or cfg.epochs)
    while state["epoch"] < last_epoch and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        record = _train_epoch(stepper, windows, catalog, cfg, optimizer, scheduler, epoch, device)
        value = float(epoch)  # without validation sessions every epoch "improves": the last one is kept
        if valid_sessions is not None:
            started = time.perf_counter()
            metrics = validation_metrics(
                model,
                valid_sessions,
                catalog,
                ks=(cfg.valid_k,),
                protocol=valid_protocol,
                batch_targets=cfg.eval_batch_size,
            )
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            record["validation_seconds"] = time.perf_counter() - started
            value = metrics[metric]
        if value > state["best"]:
            state.update(best=value, best_epoch=epoch, bad_epochs=0)
            state["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(record)
        if world.is_main:
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
        if run_dir is not None:
            distributed.run_on_main(lambda: _write_epoch(run_dir, state, model, optimizer, scheduler, world.size))
        if on_epoch_end is not None:
            on_epoch_end(record)
    best_record = state["history"][state["best_epoch"] - 1]
    return TrainResult(
        best_state=state["best_state"],
        best_epoch=state["best_epoch"],
        best_metrics={k[len("valid_") :]: v for k, v in best_record.items() if k.startswith("valid_")},
        history=state["history"],
        stopped_early=state["epoch"] < last_epoch,
    )


def _epoch_steps(windows: SessionWindows, cfg: TrainConfig, epoch: int, n_processes: int) -> int:
    batches = windows.epoch_batches(cfg.batch_targets, np.random.default_rng([cfg.seed, epoch]))
    return distributed.steps_per_epoch(len(batches), n_processes)


def _dropout_seed(seed: int, epoch: int, rank: int) -> int:
    # Rank 0 keeps the single-process seed; the other ranks draw other dropout masks for their batches.
    if rank == 0:
        return seed * 1_000_003 + epoch
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _train_epoch(model, windows, catalog, cfg, optimizer, scheduler, epoch, device) -> dict[str, Any]:
    world = distributed.world()
    model.train()
    torch.manual_seed(_dropout_seed(cfg.seed, epoch, world.rank))  # dropout of this epoch, independent of resuming
    rng = np.random.default_rng([cfg.seed, epoch])  # data order of this epoch, the same on every rank
    sums = {"loss": 0.0, "item_loss": 0.0, "category_loss": 0.0}
    n_steps, n_targets, started, cpu_started = 0, 0, time.perf_counter(), time.process_time()
    steps = distributed.rank_steps(windows.epoch_batches(cfg.batch_targets, rng), windows.n_targets, world)
    bar = progress(
        iter_epoch([step.rows for step in steps], windows, catalog),
        total=len(steps),
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not cfg.show_progress or not world.is_main,
        leave=False,
    )
    for step, (batch, target_mask) in zip(steps, bar, strict=True):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = model(batch.to(device), target_mask.to(device))
        loss, losses = out.loss, {name: getattr(out, name).detach() for name in sums}
        if world.size > 1:
            # DDP averages gradients over the W ranks: W x share makes the average the gradient of the mean
            # loss over all targets of the global batch, however the targets fall between the ranks.
            loss = out.loss * (world.size * step.share)
            losses = _global_losses(losses, step.share)
        if not torch.isfinite(losses["loss"]):  # on every rank at once: the global loss is the same everywhere
            raise TrainingDivergedError(
                f"non-finite loss ({losses['loss'].item()}) at epoch {epoch}, step {n_steps + 1}; "
                "lower train.lr, keep train.grad_clip > 0 or use train.precision = 'fp32'"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        n_steps += 1
        n_targets += step.n_targets
        for name in sums:
            sums[name] += float(losses[name])
        elapsed = time.perf_counter() - started
        # refresh=False: the bar redraws at its own interval (a redraw per step floods a log file).
        postfix = {"loss": f"{sums['loss'] / n_steps:.3f}", "targets_per_s": f"{n_targets / elapsed:.0f}"}
        bar.set_postfix(postfix, refresh=False)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch,
        "steps": scheduler.last_epoch,
        "lr": scheduler.get_last_lr()[0],
        **{f"train_{name}": total / max(n_steps, 1) for name, total in sums.items()},
        "train_seconds": seconds,
        "train_cpu_seconds": time.process_time() - cpu_started,  # all threads; on a shared machine < wall x threads
        "targets_per_second": n_targets / seconds,
        "sessions_per_second": windows.n_rows / seconds,
    }


def _global_losses(losses: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """The mean losses over the global batch, from each rank's mean weighted by its share of the targets."""
    names = list(losses)
    summed = distributed.sum_over_ranks(torch.stack([losses[name].float() * share for name in names]))
    return dict(zip(names, summed, strict=True))


def _write_epoch(run_dir, state, model, optimizer, scheduler, world_size: int) -> None:
    write_checkpoint(run_dir, _checkpoint(state, model, optimizer, scheduler, world_size))
    write_log(run_dir, state["history"])


def _checkpoint(state, model, optimizer, scheduler, world_size: int) -> dict[str, Any]:
    return {
        **{k: v for k, v in state.items() if k != "best_state"},
        "best_state": state["best_state"],
        "model": model.state_dict(),  # the unwrapped model: a checkpoint resumes with any number of processes
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "world_size": world_size,
    }


def _continue_schedule(scheduler, windows: SessionWindows, cfg: TrainConfig, epochs_done: int, world_size: int) -> None:
    """Move the schedule to the step count ``world_size`` processes reach after ``epochs_done`` epochs.

    The number of processes sets the steps per epoch, so the saved step count of another number would put
    the learning rate at another point of the schedule than the epochs done. AdamW's moments are kept.
    """
    steps_done = sum(_epoch_steps(windows, cfg, epoch, world_size) for epoch in range(1, epochs_done + 1))
    scheduler.last_epoch = steps_done - 1
    scheduler.step()  # sets last_epoch to steps_done and the learning rate of that step
    logger.info("resuming with %d processes: the schedule continues at step %d", world_size, steps_done)


def _restore(run_dir, model, optimizer, scheduler, device) -> dict[str, Any]:
    # Rank 0 reads and sends the checkpoint to the others: with several machines only it may see run_dir.
    location = device if distributed.world().size == 1 else "cpu"
    checkpoint = distributed.run_on_main(lambda: read_checkpoint(run_dir, map_location=location))
    model.load_state_dict(checkpoint.pop("model"))
    optimizer.load_state_dict(checkpoint.pop("optimizer"))
    scheduler.load_state_dict(checkpoint.pop("scheduler"))
    checkpoint["best_state"] = {k: v.to("cpu") for k, v in checkpoint["best_state"].items()}
    logger.info("resuming after epoch %d (best so far: epoch %d)", checkpoint["epoch"], checkpoint["best_epoch"])
    return checkpoint
