"""A training run end to end: configuration + training data -> trained model -> run directory.

`TrainingData` is the only thing a run receives from a dataset: the sessions to fit on, the validation
sessions, the vocabulary and the catalogue. It is built from a `PreparedDataset` by dropping the test
split, so no code path of training or model selection can read test sessions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.config import RunConfig, config_from_dict
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.models.hiersrec import HierSRec, ItemFeatures
from hiersrec.provenance import provenance
from hiersrec.train.artifact import CHECKPOINT, Artifact, read_json, save_artifact, write_json
from hiersrec.train.loop import TrainResult, resolve_device, train

logger = logging.getLogger(__name__)


def sessions_digest(sessions: SessionData) -> str:
    """SHA-256 of the session arrays (offsets and items): identifies a split exactly."""
    digest = hashlib.sha256()
    for array in (sessions.offsets, sessions.items):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainingData:
    """What training and model selection may see; there is no test split here by construction.

    Attributes:
        name: dataset name.
        train: sessions to fit on.
        valid: validation sessions (early stopping and checkpoint selection); None for a refit.
        vocab: raw id maps.
        catalog: item attributes.
        validation: description of the validation split, recorded in ``meta.json``.
        protocol: evaluation cases of this data: ``"all_prefixes"``, or ``"last_item"`` for leave-one-out.
        fingerprint: the dataset's content fingerprint when it has one (prepared folders).
    """

    name: str
    train: SessionData
    valid: SessionData | None
    vocab: Vocab
    catalog: ItemCatalog
    validation: dict[str, Any]
    protocol: str = "all_prefixes"
    fingerprint: str | None = None

    @classmethod
    def from_prepared(cls, dataset: PreparedDataset, valid_fraction: float = 0.1) -> TrainingData:
        """Keep train and validation (the source's, or the chronological tail of train); drop test."""
        fit, valid = dataset.validation_split(valid_fraction)
        validation = {
            "split": "source_valid" if dataset.valid is not None else "train_tail",
            "fraction": None if dataset.valid is not None else valid_fraction,
            "n_sessions": valid.n_sessions,
            "sessions_sha256": sessions_digest(valid),
            "protocol": dataset.default_protocol,
        }
        return cls(
            name=dataset.name,
            train=fit,
            valid=valid,
            vocab=dataset.vocab,
            catalog=dataset.catalog,
            validation=validation,
            protocol=dataset.default_protocol,
            fingerprint=dataset.provenance.get("fingerprint"),
        )

    @classmethod
    def for_refit(cls, dataset: PreparedDataset, valid_fraction: float = 0.1) -> TrainingData:
        """All training sessions, validation included, and no validation split (for a refit).

        The number of epochs of a refit is chosen on `from_prepared`'s validation split first, as the
        baselines are refitted on all of train after tuning. For sources with their own validation split
        (leave-one-out), that split's sessions are the training sessions extended by one click, so they are
        what a refit trains on.
        """
        chosen_on = cls.from_prepared(dataset, valid_fraction).validation
        return cls(
            name=dataset.name,
            train=dataset.valid if dataset.valid is not None else dataset.train,
            valid=None,
            vocab=dataset.vocab,
            catalog=dataset.catalog,
            validation={"split": "none (refit on all training sessions)", "epochs_chosen_on": chosen_on},
            protocol=dataset.default_protocol,
            fingerprint=dataset.provenance.get("fingerprint"),
        )


def fit_run(
    config: RunConfig, data: TrainingData, run_dir: str | Path, *, resume: bool = False, stop_after: int | None = None
) -> tuple[Artifact, TrainResult]:
    """Build HierSRec from ``config``, train it on ``data`` and write the run directory.

    Args:
        config: the run configuration (``model.n_items`` / ``n_categories`` are filled from the data).
        data: training and validation sessions (never the test split).
        run_dir: output directory; must be new or empty unless ``resume``.
        resume: continue an interrupted run in ``run_dir`` (its saved config must match ``config``).
        stop_after: stop after this many epochs of the configured schedule (with `TrainingData.for_refit`:
            the number of epochs chosen on validation).

    Raises:
        ArtifactError: ``run_dir`` holds another run (without ``resume``) or nothing to resume.
        ConfigError: the configuration does not fit the data, or differs from the run being resumed.
    """
    if not isinstance(data, TrainingData):
        raise TypeError("fit_run takes TrainingData (train + validation only); use TrainingData.from_prepared")
    run_dir = Path(run_dir)
    config = RunConfig(data=config.data, model=config.model.with_catalog(data.catalog), train=config.train)
    features = ItemFeatures.from_catalog(data.catalog, config.model, config.data.text_cache_dir or None)
    _prepare_run_dir(run_dir, config, resume)
    torch.manual_seed(config.train.seed)  # initial weights
    model = HierSRec(config.model, features)
    started = time.time()
    result = train(
        model, data.train, data.valid, data.catalog, config.train,
        run_dir=run_dir, resume=resume, valid_protocol=data.protocol, stop_after=stop_after,
    )  # fmt: skip
    model.load_state_dict(result.best_state)
    model.to("cpu").eval()
    epoch_seconds = [record["train_seconds"] for record in result.history]
    metrics = {
        "valid": result.best_metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "stop_after": stop_after,
        "mean_epoch_seconds": float(np.mean(epoch_seconds)),
    }
    meta = {
        **provenance(),
        "device": str(resolve_device(config.train.device)),
        "seed": config.train.seed,
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
        "train_sessions_sha256": sessions_digest(data.train),
        "validation_split": data.validation,
        "resumed": resume,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds_this_process": time.time() - started,
    }
    popularity = data.train.item_counts(data.catalog.n_items)
    save_artifact(run_dir, model, data.vocab, data.catalog, config, meta, metrics, result.history, popularity)
    artifact = Artifact(model, data.vocab, data.catalog, config, meta, metrics, popularity)
    return artifact, result


def _outcome_fields(config: RunConfig) -> RunConfig:
    # What decides the result: resuming may change only how it is run (progress bar, threads, device, data path).
    train = dataclasses.replace(config.train, show_progress=True, threads=0, device="auto")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=""), train=train)


def _prepare_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise ArtifactError(f"cannot resume: {run_dir} has no {CHECKPOINT}; start the run without --resume")
        saved = config_from_dict(read_json(run_dir / "config.json"))
        if _outcome_fields(saved) != _outcome_fields(config):
            raise ConfigError(f"--resume: the configuration differs from the one {run_dir} was started with")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ArtifactError(f"{run_dir} is not empty; choose a new --out, or continue it with --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())
