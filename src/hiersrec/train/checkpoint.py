"""What training writes beside the run directory's artifact: the per-epoch checkpoint and log, the curve.

``checkpoint.pt`` holds the last epoch's full training state (weights, optimiser, schedule, early-stopping
state, history) for ``--resume``; ``train_log.jsonl`` one JSON record per epoch; ``curve.png`` the training
loss and validation metrics per epoch. Readers of a run (evaluation, serving) never need them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from hiersrec.artifact import load_tensors
from hiersrec.errors import ArtifactError
from hiersrec.files import write_bytes_atomic, write_with_atomic

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"
CURVE = "curve.png"


def write_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Atomically write the training state (tensors, numbers, strings, lists and dicts only)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_with_atomic(Path(run_dir) / CHECKPOINT, lambda path: torch.save(state, path))


def read_checkpoint(run_dir: str | Path | None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state written by `write_checkpoint`.

    Raises:
        ArtifactError: there is no checkpoint to resume from.
    """
    path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if path is None or not path.is_file():
        raise ArtifactError(f"cannot resume: no {CHECKPOINT} in {run_dir}; start the run without --resume")
    return load_tensors(path, map_location)


def write_log(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """Atomically (re)write ``train_log.jsonl``: one JSON record per epoch."""
    lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in history)
    write_bytes_atomic(Path(run_dir) / LOG, lines.encode())


def plot_curve(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Training loss and validation metrics per epoch, as a PNG."""
    # The object-oriented Agg canvas: no pyplot, no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(9, 3.5))
    loss_axes, metric_axes = figure.subplots(1, 2)
    for name in ("train_loss", "train_item_loss", "train_category_loss"):
        loss_axes.plot(epochs, [record.get(name) for record in history], marker="o", label=name)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="training loss")
    loss_axes.legend()
    for name in sorted({k for record in history for k in record if k.startswith("valid_") and "@" in k}):
        metric_axes.plot(epochs, [record.get(name) for record in history], marker="o", label=name)
    metric_axes.set(xlabel="epoch", title="validation")
    if metric_axes.get_lines():  # a refit has no validation metrics
        metric_axes.legend(fontsize="small")
    figure.tight_layout()
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
