"""The training loop: AdamW, warm-up + decay, early stopping on validation MRR@k, checkpoints to resume.

`train` sees only the sessions to fit on and the validation sessions: the caller cannot hand it the test
split by mistake through a dataset object (see `hiersrec.train.run.TrainingData`). Every epoch ends with
a checkpoint (weights, optimiser, schedule, early-stopping state, history); the data order and dropout of
epoch ``e`` come from generators seeded with ``(seed, e)``, so a resumed run repeats exactly the epochs an
uninterrupted run would have done.
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

from hiersrec.config import TrainConfig
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError, TrainingDivergedError
from hiersrec.progress import progress
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

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device)
    windows = SessionWindows.from_sessions(train_sessions, model.config.max_len)
    # Batch counts vary by a step or two between epochs; the schedule uses the first epoch's.
    steps_per_epoch = len(windows.epoch_batches(cfg.batch_targets, np.random.default_rng([cfg.seed, 1])))
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (0.9, cfg.beta2))
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_state": None}
    if resume:
        state = _restore(run_dir, model, optimizer, scheduler, device)
    metric = f"mrr@{cfg.valid_k}"
    last_epoch = min(cfg.epochs, stop_after or cfg.epochs)
    while state["epoch"] < last_epoch and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        record = _train_epoch(model, windows, catalog, cfg, optimizer, scheduler, epoch, device)
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
        logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
        if run_dir is not None:
            write_checkpoint(run_dir, _checkpoint(state, model, optimizer, scheduler))
            write_log(run_dir, state["history"])
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


def _train_epoch(model, windows, catalog, cfg, optimizer, scheduler, epoch, device) -> dict[str, Any]:
    model.train()
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout of this epoch, independent of resuming
    rng = np.random.default_rng([cfg.seed, epoch])  # data order of this epoch
    sums = {"loss": 0.0, "item_loss": 0.0, "category_loss": 0.0}
    n_steps, n_targets, started, cpu_started = 0, 0, time.perf_counter(), time.process_time()
    batches = windows.epoch_batches(cfg.batch_targets, rng)
    bar = progress(
        iter_epoch(batches, windows, catalog),
        total=len(batches),
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not cfg.show_progress,
        leave=False,
    )
    for batch, target_mask in bar:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = model(batch.to(device), target_mask.to(device))
        if not torch.isfinite(out.loss):
            raise TrainingDivergedError(
                f"non-finite loss ({out.loss.item()}) at epoch {epoch}, step {n_steps + 1}; "
                "lower train.lr, keep train.grad_clip > 0 or use train.precision = 'fp32'"
            )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        n_steps += 1
        n_targets += out.target_items.numel()
        for name in sums:
            sums[name] += float(getattr(out, name).detach())
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


def _checkpoint(state, model, optimizer, scheduler) -> dict[str, Any]:
    return {
        **{k: v for k, v in state.items() if k != "best_state"},
        "best_state": state["best_state"],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }


def _restore(run_dir, model, optimizer, scheduler, device) -> dict[str, Any]:
    checkpoint = read_checkpoint(run_dir, map_location=device)
    model.load_state_dict(checkpoint.pop("model"))
    optimizer.load_state_dict(checkpoint.pop("optimizer"))
    scheduler.load_state_dict(checkpoint.pop("scheduler"))
    checkpoint["best_state"] = {k: v.to("cpu") for k, v in checkpoint["best_state"].items()}
    logger.info("resuming after epoch %d (best so far: epoch %d)", checkpoint["epoch"], checkpoint["best_epoch"])
    return checkpoint
