"""The run directory: everything scoring needs, written atomically, loaded without unpickling code.

A finished run directory holds::

    config.json       resolved run configuration (data, model incl. n_items / n_categories, train)
    weights.pt        the selected model's state_dict (tensors only; loaded with weights_only=True)
    vocab.json        raw item / category ids of each index
    catalog.npz       item categories and metadata columns (loaded with allow_pickle=False)
    popularity.npy    click count of each item index in the training sessions (the recommender's fallback)
    metrics.json      validation metrics of the selected epoch, epochs run
    meta.json         versions, commit, device, seed, data fingerprint, validation split, format_version
    train_log.jsonl   one JSON record per epoch
    curve.png         training loss and validation metrics per epoch
    checkpoint.pt     last epoch's full training state (for ``--resume``)

Every file is written to a temporary name and renamed into place, so a crash never leaves a half-written
file; ``meta.json`` is written last and marks the run as complete.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ArtifactError

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
META = "meta.json"
POPULARITY = "popularity.npy"


@dataclass
class Artifact:
    """A loaded run: the model in eval mode and everything needed to score and explain it."""

    model: Any  # HierSRec
    vocab: Vocab
    catalog: ItemCatalog
    config: Any  # hiersrec.config.RunConfig
    meta: dict[str, Any]
    metrics: dict[str, Any]
    item_popularity: np.ndarray | None = None  # (V,) training click counts; None for runs saved without them


def save_artifact(
    run_dir: str | Path,
    model: torch.nn.Module,
    vocab: Vocab,
    catalog: ItemCatalog,
    config: Any,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    item_popularity: np.ndarray | None = None,
) -> Path:
    """Write a complete run directory (``meta.json`` last) and return its path.

    Args:
        run_dir: the run directory (created if needed).
        model: the selected model (its ``state_dict`` is saved).
        vocab: raw id maps.
        catalog: item attributes.
        config: the resolved `RunConfig`.
        meta: provenance (``format_version`` is added).
        metrics: validation metrics of the selected epoch and run summary.
        history: per-epoch records (also plotted to ``curve.png``).
        item_popularity: (V,) click counts of the training sessions, the fallback for empty sessions.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())
    _atomic_save(run_dir / "weights.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
    write_json(run_dir / "vocab.json", {"item_ids": list(vocab.item_ids), "category_ids": list(vocab.category_ids)})
    _write_catalog(run_dir / "catalog.npz", catalog)
    if item_popularity is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(item_popularity, dtype=np.int64))
        _atomic_write(run_dir / POPULARITY, buffer.getvalue())
    write_json(run_dir / "metrics.json", metrics)
    write_log(run_dir, history)
    _plot_curve(run_dir / "curve.png", history)
    write_json(run_dir / META, {"format_version": FORMAT_VERSION, **meta})
    return run_dir


def load_artifact(run_dir: str | Path, map_location: str | torch.device = "cpu") -> Artifact:
    """Load a run directory written by `save_artifact`; the model is in eval mode.

    Raises:
        ArtifactError: the directory is missing, incomplete (no ``meta.json``: training did not finish) or
            of another format version.
    """
    from hiersrec.config import config_from_dict
    from hiersrec.models.hiersrec import HierSRec, ItemFeatures

    run_dir = Path(run_dir)
    meta = read_json(run_dir / META, hint="the run is incomplete; finish it with 'hiersrec train ... --resume'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{run_dir / META}: format_version {meta.get('format_version')!r}, this hiersrec reads {FORMAT_VERSION}"
        )
    config = config_from_dict(read_json(run_dir / "config.json"), source=str(run_dir / "config.json"))
    state = _load_tensors(run_dir / "weights.pt", map_location)
    model = HierSRec(config.model, ItemFeatures.from_state_dict(state))
    model.load_state_dict(state)
    model.eval()
    vocab_raw = read_json(run_dir / "vocab.json")
    vocab = Vocab(item_ids=tuple(vocab_raw["item_ids"]), category_ids=tuple(vocab_raw["category_ids"]))
    popularity_path = run_dir / POPULARITY
    popularity = np.load(popularity_path, allow_pickle=False) if popularity_path.is_file() else None
    catalog = _read_catalog(run_dir / "catalog.npz")
    return Artifact(model, vocab, catalog, config, meta, read_json(run_dir / "metrics.json"), popularity)


def write_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Atomically write the training state (tensors, numbers, strings, lists and dicts only)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _atomic_save(Path(run_dir) / CHECKPOINT, state)


def read_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state written by `write_checkpoint`.

    Raises:
        ArtifactError: there is no checkpoint to resume from.
    """
    path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if path is None or not path.is_file():
        raise ArtifactError(f"cannot resume: no {CHECKPOINT} in {run_dir}; start the run without --resume")
    return _load_tensors(path, map_location)


def write_log(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """Atomically (re)write ``train_log.jsonl``: one JSON record per epoch."""
    lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in history)
    _atomic_write(Path(run_dir) / "train_log.jsonl", lines.encode())


def write_json(path: Path, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON."""
    _atomic_write(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, hint: str = "") -> Any:
    """Parse a JSON file of a run directory, or raise `ArtifactError` naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: not found" + (f"; {hint}" if hint else "")) from error
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: unreadable ({error})") from error


def _atomic_write(path: Path, data: bytes) -> None:
    # Write beside the target, flush to disk, then rename: readers see the old file or the new one.
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _atomic_save(path: Path, obj: Any) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, partial)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _load_tensors(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: not found") from error
    except Exception as error:  # a corrupt or foreign file: torch raises several kinds
        raise ArtifactError(f"{path}: cannot be loaded as tensors only ({error})") from error


def _write_catalog(path: Path, catalog: ItemCatalog) -> None:
    arrays = {"item_category": catalog.item_category, "n_categories": np.array(catalog.n_categories)}
    arrays.update({f"categorical__{name}": column for name, column in catalog.categorical.items()})
    arrays.update({f"numeric__{name}": column for name, column in catalog.numeric.items()})
    if catalog.text is not None:
        arrays["text"] = np.array(catalog.text, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(path, buffer.getvalue())


def _read_catalog(path: Path) -> ItemCatalog:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable catalogue ({error})") from error
    return ItemCatalog(
        item_category=arrays["item_category"],
        n_categories=int(arrays["n_categories"]),
        categorical={k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("categorical__")},
        numeric={k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("numeric__")},
        text=tuple(arrays["text"].tolist()) if "text" in arrays else None,
    )


def _plot_curve(path: Path, history: list[dict[str, Any]]) -> None:
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
    _atomic_write(path, buffer.getvalue())
