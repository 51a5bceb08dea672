"""The run directory: everything scoring needs for a model of any kind, loaded without unpickling code.

A finished run directory holds::

    config.json       resolved run configuration (data, model with its name and hyperparameters, train)
    weights.pt        a neural model's state_dict (tensors only; loaded with weights_only=True), or
    fitted_state.npz  a fitted model's learned arrays (loaded with allow_pickle=False) and
    fitted_state.json   their layout
    partner/          a fused model's fitted partner (its fitted_state files; `hiersrec.models.fusion`)
    vocab.json        raw item / category ids of each index
    catalog.npz       item categories and metadata columns (loaded with allow_pickle=False)
    popularity.npy    click count of each item index in the training sessions (the recommender's fallback)
    metrics.json      validation metrics of the selected model, run summary
    meta.json         versions, commit, device, seed, data fingerprint, validation split, format_version

Training adds its own files beside these (``train_log.jsonl``, ``curve.png``, ``checkpoint.pt``); nothing
here reads them. Every file is written atomically; ``meta.json`` is written last and marks the run as
complete. `load_artifact` is the only reader: evaluation, recommendation and serving all go through it, and
`check_compatible` tells whether a run was made from a given dataset.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.config import RunConfig, config_from_dict
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.vocab import PAD_TOKEN, Vocab
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.files import write_bytes_atomic, write_json_atomic, write_with_atomic
from hiersrec.models import is_neural, make_model, model_class
from hiersrec.models.fusion import FusedModel

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: HierSRec runs written before the category feed was its own module
CONFIG = "config.json"
META = "meta.json"
WEIGHTS = "weights.pt"
POPULARITY = "popularity.npy"
PARTNER = "partner"


@dataclass
class Artifact:
    """A loaded run: the model (neural ones in eval mode) and everything needed to score and explain it."""

    model: Any
    vocab: Vocab
    catalog: ItemCatalog
    config: RunConfig
    meta: dict[str, Any]
    metrics: dict[str, Any]
    item_popularity: np.ndarray | None = None  # (V,) training click counts; None for runs saved without them

    @property
    def max_len(self) -> int | None:
        """Longest context the model reads (None: the model reads whole sessions)."""
        return getattr(getattr(self.model, "config", None), "max_len", None)


def save_artifact(
    run_dir: str | Path,
    model: Any,
    vocab: Vocab,
    catalog: ItemCatalog,
    config: RunConfig,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    item_popularity: np.ndarray | None = None,
) -> Path:
    """Write a complete run directory (``meta.json`` last) and return its path.

    Args:
        run_dir: the run directory (created if needed).
        model: the trained or fitted model (a neural model's ``state_dict`` is saved; a fitted model saves
            its learned arrays).
        vocab: raw id maps.
        catalog: item attributes.
        config: the resolved `RunConfig` (its model is ``model``'s).
        meta: provenance (``format_version`` is added).
        metrics: validation metrics and run summary.
        item_popularity: (V,) click counts of the training sessions, the fallback for empty sessions.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG, config.to_dict())
    if isinstance(model, FusedModel) != config.fusion.enabled:
        raise ValueError("a fused model is saved with its [fusion] configuration, and only a fused model is")
    if isinstance(model, FusedModel):
        (run_dir / PARTNER).mkdir(exist_ok=True)
        model.partner.save(run_dir / PARTNER)
        model = model.neural
    if is_neural(config.model_name):
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        write_with_atomic(run_dir / WEIGHTS, lambda path: torch.save(state, path))
    else:
        model.save(run_dir)
    write_json_atomic(
        run_dir / "vocab.json", {"item_ids": list(vocab.item_ids), "category_ids": list(vocab.category_ids)}
    )
    write_bytes_atomic(run_dir / "catalog.npz", _catalog_bytes(catalog))
    if item_popularity is not None:
        write_bytes_atomic(run_dir / POPULARITY, _npy_bytes(np.asarray(item_popularity, dtype=np.int64)))
    write_json_atomic(run_dir / "metrics.json", metrics)
    write_json_atomic(run_dir / META, {**meta, "format_version": FORMAT_VERSION})
    return run_dir


def load_artifact(run_dir: str | Path, map_location: str | torch.device = "cpu") -> Artifact:
    """Load a run directory written by `save_artifact`, whatever its model.

    Raises:
        ArtifactError: the directory is missing, incomplete (no ``meta.json``: the run did not finish), of an
            unknown format version, or one of its files is unreadable or does not fit the configuration.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such run directory")
    meta = read_json(run_dir / META, hint="the run is incomplete; finish it with 'hiersrec train ... --resume'")
    if not isinstance(meta, dict):
        raise ArtifactError(f"{run_dir / META}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{run_dir / META}: format_version {version!r}, this hiersrec reads {READABLE_VERSIONS}")
    try:
        config = config_from_dict(read_json(run_dir / CONFIG), source=str(run_dir / CONFIG))
    except ConfigError as error:
        raise ArtifactError(str(error)) from error
    vocab = _read_vocab(run_dir / "vocab.json")
    catalog = _read_catalog(run_dir / "catalog.npz", vocab)
    popularity = _read_popularity(run_dir / POPULARITY, vocab.n_items)
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise ArtifactError(f"{run_dir / 'metrics.json'}: expected a JSON object, got {type(metrics).__name__}")
    model = _load_model(run_dir, config, version, map_location)
    if config.fusion.enabled:
        model = _load_fused(run_dir, model, config)
    sizes = getattr(getattr(model, "config", None), "n_items", vocab.n_items + 1)
    if sizes != vocab.n_items + 1:
        raise ArtifactError(f"{run_dir / CONFIG}: the model scores {sizes - 1} items, vocab.json names {vocab.n_items}")
    return Artifact(model, vocab, catalog, config, meta, metrics, popularity)


def check_compatible(artifact: Artifact, dataset: PreparedDataset, run: str | Path = "the run") -> None:
    """Raise `ArtifactError` unless ``artifact`` was made from ``dataset`` (fingerprint and vocabulary).

    Every consumer that scores a run on a dataset (evaluation, candidate evaluation, benchmarks) asks this.
    """
    trained_on = artifact.meta.get("data_fingerprint")
    fingerprint = dataset.provenance.get("fingerprint")
    if trained_on and fingerprint and trained_on != fingerprint:
        raise ArtifactError(
            f"{run} was trained on data with fingerprint {trained_on}, but the dataset has {fingerprint}; "
            "evaluate on the dataset the run was trained on"
        )
    if artifact.vocab.item_ids != dataset.vocab.item_ids:
        raise ArtifactError(f"{run}: the run's item vocabulary differs from the dataset's; wrong --data?")


def read_json(path: Path, hint: str = "") -> Any:
    """Parse a JSON file of a run directory, or raise `ArtifactError` naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: not found" + (f"; {hint}" if hint else "")) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: unreadable ({error})") from error


def _load_model(run_dir: Path, config: RunConfig, version: int, map_location: str | torch.device) -> Any:
    name = config.model_name
    if not is_neural(name):
        return make_model(name, config.model_params).load(run_dir)
    state = load_tensors(run_dir / WEIGHTS, map_location)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{run_dir / WEIGHTS}: not a state dict of tensors")
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise ArtifactError(f"{run_dir / WEIGHTS}: non-finite values (NaN or inf) in {broken[:3]}; retrain the run")
    if version == 1:
        state = _upgrade_v1_state(state)
    try:
        return model_class(name).from_state_dict(config.model, state)
    except ConfigError as error:
        raise ArtifactError(f"{run_dir / WEIGHTS}: {error}") from error


def _load_fused(run_dir: Path, neural: Any, config: RunConfig) -> FusedModel:
    fusion = config.fusion
    if fusion.weight is None:
        raise ArtifactError(f"{run_dir / CONFIG}: [fusion] names partner {fusion.partner!r} but no chosen weight")
    partner = make_model(fusion.partner, fusion.partner_params).load(run_dir / PARTNER)
    try:
        return FusedModel(neural, partner, fusion.rule, fusion.weight)
    except ConfigError as error:
        raise ArtifactError(f"{run_dir / CONFIG}: {error}") from error


def _upgrade_v1_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Version 1 kept the category feed's layers on the model itself.
    renames = (
        ("feed_proj.", "category_feed.proj."),
        ("feed.", "category_feed.ffn."),
        ("prior_weight", "category_feed.prior_weight"),
    )
    upgraded = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        upgraded[key] = value
    return upgraded


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """A file of tensors, numbers, strings, lists and dicts only (``weights_only``: no code is unpickled).

    Raises:
        ArtifactError: the file is missing, corrupt or holds anything else.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: not found") from error
    except Exception as error:  # a corrupt or foreign file: torch raises several kinds, some over many lines
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ArtifactError(f"{path}: cannot be loaded as tensors only ({reason})") from error


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _catalog_bytes(catalog: ItemCatalog) -> bytes:
    arrays = {"item_category": catalog.item_category, "n_categories": np.array(catalog.n_categories)}
    arrays.update({f"categorical__{name}": column for name, column in catalog.categorical.items()})
    arrays.update({f"numeric__{name}": column for name, column in catalog.numeric.items()})
    if catalog.text is not None:
        arrays["text"] = np.array(catalog.text, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _read_vocab(path: Path) -> Vocab:
    raw = read_json(path)
    ids = raw if isinstance(raw, dict) else {}
    columns = [ids.get("item_ids"), ids.get("category_ids")]
    if not all(isinstance(c, list) and c and all(isinstance(i, str) for i in c) for c in columns):
        raise ArtifactError(f"{path}: expected an object with non-empty string lists item_ids and category_ids")
    for name, column in zip(("item_ids", "category_ids"), columns, strict=True):
        if column[0] != PAD_TOKEN or len(set(column)) != len(column):
            raise ArtifactError(f"{path}: {name} must start with the padding id {PAD_TOKEN!r} and repeat no id")
    return Vocab(item_ids=tuple(columns[0]), category_ids=tuple(columns[1]))


def _read_popularity(path: Path, n_items: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        popularity = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ArtifactError(f"{path}: unreadable ({error})") from error
    if popularity.shape != (n_items + 1,) or not np.issubdtype(popularity.dtype, np.number):
        raise ArtifactError(f"{path}: expected {n_items + 1} click counts, got {popularity.dtype} {popularity.shape}")
    return popularity


def _read_catalog(path: Path, vocab: Vocab) -> ItemCatalog:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        catalog = ItemCatalog(
            item_category=arrays["item_category"],
            n_categories=int(arrays["n_categories"]),
            categorical={k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("categorical__")},
            numeric={k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("numeric__")},
            text=tuple(arrays["text"].tolist()) if "text" in arrays else None,
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise ArtifactError(f"{path}: unreadable catalogue ({type(error).__name__}: {error})") from error
    if catalog.n_items != vocab.n_items or catalog.n_categories != vocab.n_categories:
        raise ArtifactError(
            f"{path}: {catalog.n_items} items in {catalog.n_categories} categories, but vocab.json names "
            f"{vocab.n_items} items and {vocab.n_categories} categories"
        )
    return catalog
