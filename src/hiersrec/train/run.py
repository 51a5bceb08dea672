"""A run end to end, for any registered model: configuration + training data -> model -> run directory.

`TrainingData` is the only thing a run receives from a dataset: the sessions to fit on, the validation
sessions, the vocabulary and the catalogue. It is built from a `PreparedDataset` by dropping the test
split, so no code path of training or model selection can read test sessions.

A neural model is trained by the training loop with early stopping on the validation sessions. A fitted
model is fitted in closed form on all training sessions (as ``hiersrec evaluate --model`` fits it), after an
optional random search of its hyperparameters on the validation tail (`hiersrec.tuning`). Any model can
first be searched with Optuna (`hiersrec.search`); its study is kept in the run directory, so running the
same search again continues it, and the best configuration is then trained or fitted as above.

A neural model can be trained by several processes under torchrun (`hiersrec.train.distributed`): every
rank trains, rank 0 alone claims and writes the run directory (and fuses a partner); the other ranks
return the trained model without writing anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.artifact import CONFIG, Artifact, load_artifact, read_json, save_artifact
from hiersrec.config import FittedModelConfig, FusionConfig, RunConfig, config_from_dict
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.files import claim_target, write_json_atomic
from hiersrec.models import is_neural, make_model
from hiersrec.provenance import provenance
from hiersrec.search import STUDY, SearchResult, search_hyperparameters
from hiersrec.train import distributed
from hiersrec.train.checkpoint import CHECKPOINT, CURVE, plot_curve, write_log
from hiersrec.train.fusion import attach_partner
from hiersrec.train.loop import TrainResult, resolve_device, train
from hiersrec.tuning import TuningResult, tune_and_fit

SEARCHES = ("random", "optuna")

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
        all_train: every training session (``train`` and the validation tail together), what a fitted
            model is finally fitted on; None when unknown.
    """

    name: str
    train: SessionData
    valid: SessionData | None
    vocab: Vocab
    catalog: ItemCatalog
    validation: dict[str, Any]
    protocol: str = "all_prefixes"
    fingerprint: str | None = None
    all_train: SessionData | None = None

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
            all_train=dataset.train,
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
    config: RunConfig,
    data: TrainingData,
    run_dir: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    tune_trials: int = 0,
    search: str = "random",
    fixed: Collection[str] = (),
    show_progress: bool = False,
) -> tuple[Artifact, TrainResult | TuningResult | SearchResult | None]:
    """Build the configured model, train or fit it on ``data`` and write the run directory.

    Args:
        config: the run configuration (a neural model's ``n_items`` / ``n_categories`` are filled from the data).
        data: training and validation sessions (never the test split).
        run_dir: output directory; must be new or empty unless ``resume``.
        resume: continue an interrupted training in ``run_dir`` (its saved config must match ``config``).
        stop_after: neural models: stop after this many epochs of the configured schedule (with
            `TrainingData.for_refit`: the number of epochs chosen on validation).
        tune_trials: trials of the hyperparameter search on the validation split before the final training
            or fit (0: the configured hyperparameters as they are); trial 0 is the configured run.
        search: ``"random"`` (fitted models only, `hiersrec.tuning`) or ``"optuna"`` (every model,
            `hiersrec.search`; its study ``study.db`` in ``run_dir`` is continued when the run is started again).
        fixed: with ``"optuna"``: hyperparameters (``"section.field"``) the configuration sets, held fixed by
            the search (`search_hyperparameters`).
        show_progress: a progress bar over the search trials.

    Returns:
        The saved `Artifact`, and the `TrainResult` (neural), the `TuningResult` or `SearchResult` (fitted and
        searched) or None. A search's trials are recorded in ``metrics["tuning"]``.

    Raises:
        ArtifactError: ``run_dir`` holds another run (without ``resume``) or nothing to resume, or another
            process is writing it (`hiersrec.files.TargetBusyError`).
        ConfigError: the configuration does not fit the data, or differs from the run being resumed; a random
            search of a neural model; ``run_dir`` holds a search that ``search`` does not continue; several
            processes (torchrun) for a fitted model or a search.
    """
    if not isinstance(data, TrainingData):
        raise TypeError("fit_run takes TrainingData (train + validation only); use TrainingData.from_prepared")
    # One writer per run directory: a second training into the same --out is refused while this one runs.
    # Under torchrun rank 0 is that writer; the others learn from run_on_main whether it got the claim.
    with ExitStack() as claim:

        def claim_run_dir() -> None:
            claim.enter_context(claim_target(run_dir))

        distributed.run_on_main(claim_run_dir)
        return _fit(config, data, Path(run_dir), resume, stop_after, tune_trials, search, fixed, show_progress)


def _fit(config, data, run_dir, resume, stop_after, tune_trials, search, fixed, show_progress):
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r}; choose one of {list(SEARCHES)}")
    searching = search == "optuna" and tune_trials > 0
    distributed.check_data_parallel(is_neural(config.model_name), searching, distributed.world().size)
    if (run_dir / STUDY).is_file() and not searching:
        raise ConfigError(
            f"{run_dir} holds a hyperparameter search ({STUDY}); continue it with the command that started it "
            "(--search optuna --tune-trials N), or choose a new --out"
        )
    if is_neural(config.model_name):
        if tune_trials and not searching:
            raise ConfigError(
                f"random search is for fitted models; search the neural {config.model_name!r} with --search optuna"
            )
        if searching:
            return _search_neural(config, data, run_dir, resume, stop_after, tune_trials, fixed, show_progress)
        return _train_neural(config, data, run_dir, resume, stop_after)
    if resume:
        raise ConfigError(f"model {config.model_name!r} is fitted in one go: there is nothing to resume")
    if not searching:
        return _fit_closed_form(config, data, run_dir, tune_trials, show_progress)
    _prepare_run_dir(run_dir, config, resume=False)  # before the search: a run directory in use fails first
    searched = _search(config, data, run_dir, tune_trials, fixed, show_progress)
    return _fit_closed_form(searched.best_config, data, run_dir, 0, show_progress, searched)


def _search(config, data, run_dir, tune_trials, fixed, show_progress) -> SearchResult:
    if data.valid is None:
        raise ConfigError("a hyperparameter search needs validation sessions; use TrainingData.from_prepared")
    # Trials fit on data.train and score on data.valid: for fitted models the head and tail random search uses.
    return search_hyperparameters(
        config, data.train, data.valid, data.catalog,
        storage=run_dir / STUDY, n_trials=tune_trials, protocol=data.protocol, fixed=fixed,
        identity=_outcome_fields(config).to_dict(), show_progress=show_progress,
    )  # fmt: skip


def _search_neural(config, data, run_dir, resume, stop_after, tune_trials, fixed, show_progress):
    if resume:
        raise ConfigError("a search continues when its command is run again, without --resume")
    # An interrupted final training (its checkpoint is there) continues once the finished study is read back.
    final_started = (run_dir / CHECKPOINT).is_file()
    if not final_started:
        _prepare_run_dir(run_dir, config, resume=False)
    searched = _search(config, data, run_dir, tune_trials, fixed, show_progress)
    return _train_neural(searched.best_config, data, run_dir, final_started, stop_after, searched)


def _fit_closed_form(
    config: RunConfig,
    data: TrainingData,
    run_dir: Path,
    tune_trials: int,
    show_progress: bool,
    searched: SearchResult | None = None,
) -> tuple[Artifact, TuningResult | SearchResult | None]:
    name, params = config.model_name, config.model_params
    _prepare_run_dir(run_dir, config, resume=False)
    fit_sessions = data.all_train if data.all_train is not None else data.train
    # Values set in the configuration are held fixed; the rest of the model's space is searched.
    fitted = tune_and_fit(
        name,
        params,
        fit_sessions,
        data.catalog,
        tune_trials=tune_trials,
        valid_fraction=config.data.valid_fraction,
        # A source's own validation split (leave-one-out) and its last-item cases, as a neural model selects on.
        valid=data.valid if data.validation.get("split") == "source_valid" else None,
        protocol=data.protocol,
        show_progress=show_progress,
    )
    model, tuning, fit_seconds = fitted.model, fitted.tuning or searched, fitted.fit_seconds
    config = dataclasses.replace(config, model=FittedModelConfig(name=name, params=fitted.params))
    metrics = {
        "valid": {} if tuning is None else tuning.best_metrics,
        "fit_seconds": fit_seconds,
        "tuning": None if tuning is None else tuning.to_dict(),
    }
    meta = {
        **_run_meta(config, data, fit_sessions),
        "device": "cpu",
        "fitted_on": "all training sessions (the validation tail included)"
        if data.all_train is not None
        else "the training sessions without the validation tail",
    }
    if tuning is None:  # nothing was chosen on a validation split
        meta["validation_split"] = None
    popularity = fit_sessions.item_counts(data.catalog.n_items)
    save_artifact(run_dir, model, data.vocab, data.catalog, config, meta, metrics, popularity)
    return Artifact(model, data.vocab, data.catalog, config, meta, metrics, popularity), tuning


def _train_neural(
    config: RunConfig,
    data: TrainingData,
    run_dir: Path,
    resume: bool,
    stop_after: int | None,
    searched: SearchResult | None = None,
) -> tuple[Artifact, TrainResult]:
    torch.manual_seed(config.train.seed)  # initial weights
    text_cache = config.data.text_cache_dir or None
    model = make_model(config.model_name, config.model_params, data.catalog, text_cache_dir=text_cache)
    config = dataclasses.replace(config, model=model.config)  # with the sizes of the data
    distributed.run_on_main(lambda: _prepare_run_dir(run_dir, config, resume))
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
    if searched is not None:
        metrics["tuning"] = searched.to_dict()
    meta = {
        **_run_meta(config, data, data.train),
        "device": str(resolve_device(config.train.device)),
        "processes": distributed.world().size,  # data-parallel training processes (torchrun)
        "seed": config.train.seed,
        "resumed": resume,
        "wall_seconds_this_process": time.time() - started,
    }
    popularity = data.train.item_counts(data.catalog.n_items)
    if not distributed.world().is_main:  # rank 0 writes the run (and fuses); nothing to wait for here
        return Artifact(model, data.vocab, data.catalog, config, meta, metrics, popularity), result
    write_log(run_dir, result.history)
    plot_curve(run_dir / CURVE, result.history)
    if config.fusion.enabled:
        model, config, metrics = _fuse(model, config, data, metrics)
    save_artifact(run_dir, model, data.vocab, data.catalog, config, meta, metrics, popularity)
    return Artifact(model, data.vocab, data.catalog, config, meta, metrics, popularity), result


def _fuse(neural: Any, config: RunConfig, data: TrainingData, metrics: dict[str, Any]):
    # The partner joins the selected neural model; its weight is chosen on the same validation cases.
    fused, search = attach_partner(
        neural, config.fusion, data.train, data.valid, data.all_train, data.catalog,
        k=config.train.valid_k, protocol=data.protocol, show_progress=config.train.show_progress,
    )  # fmt: skip
    # The run records what was chosen: a refit of it fuses the same partner at the same weight, searching nothing.
    fusion = dataclasses.replace(
        config.fusion, partner=search.partner, partner_params=search.partner_params, alternatives=(),
        rule=search.rule, weight=search.weight,
    )  # fmt: skip
    metrics = {
        **metrics,
        "valid": {**metrics.get("valid", {}), **search.chosen_metrics},
        "neural_valid": metrics.get("valid", {}),
        "fusion": {**search.to_dict(), "partner_fitted_on": "all training sessions (the validation tail included)"},
    }
    return fused, dataclasses.replace(config, fusion=fusion), metrics


def fuse_run(
    run_dir: str | Path, data: TrainingData, fusion: FusionConfig, out: str | Path
) -> tuple[Artifact, dict[str, Any]]:
    """Write to ``out`` the neural run ``run_dir`` fused with the partner of ``fusion`` (or the best alternative).

    The partner, rule and weight are chosen on ``data``'s validation tail: ``data`` must hold the same
    training and validation sessions the run was trained and selected on (checked by their digests); the
    neural model is not retrained.

    Returns:
        The fused `Artifact` and its metrics (``metrics["fusion"]`` lists every partner, rule and weight tried).

    Raises:
        ArtifactError: ``run_dir`` is not a neural run, is already fused, was made from other sessions, or
            ``out`` is not new or empty.
    """
    source = load_artifact(run_dir)
    if not is_neural(source.config.model_name) or source.config.fusion.enabled:
        kind = "a fused run" if source.config.fusion.enabled else f"a {source.config.model_name} run"
        raise ArtifactError(f"{run_dir}: fusion joins a partner to an unfused neural run, not to {kind}")
    recorded_valid = (source.meta.get("validation_split") or {}).get("sessions_sha256")
    if data.valid is None or recorded_valid != sessions_digest(data.valid):
        raise ArtifactError(f"{run_dir} was not selected on these validation sessions; give the data it was trained on")
    if source.meta.get("train_sessions_sha256") != sessions_digest(data.train):
        raise ArtifactError(f"{run_dir} was not trained on these training sessions; give the data it was trained on")
    config = dataclasses.replace(source.config, fusion=fusion)
    out = Path(out)
    with claim_target(out):
        left = {path.name for path in out.iterdir()} if out.exists() else set()
        if left:
            raise ArtifactError(f"{out} is not empty; choose a new --out")
        fused, config, metrics = _fuse(source.model, config, data, dict(source.metrics))
        meta = {**source.meta, "fused_from": str(run_dir), "fused_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        meta.pop("format_version", None)
        save_artifact(out, fused, data.vocab, data.catalog, config, meta, metrics, source.item_popularity)
    return Artifact(fused, data.vocab, data.catalog, config, meta, metrics, source.item_popularity), metrics


def _run_meta(config: RunConfig, data: TrainingData, fitted_on: SessionData) -> dict[str, Any]:
    return {
        **provenance(),
        "model": config.model_name,
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
        "train_sessions_sha256": sessions_digest(fitted_on),
        "validation_split": data.validation,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _outcome_fields(config: RunConfig) -> RunConfig:
    # What decides the result: resuming may change only how it is run (progress bar, threads, device, data path).
    train = dataclasses.replace(config.train, show_progress=True, threads=0, device="auto")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=""), train=train)


def _prepare_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise ArtifactError(f"cannot resume: {run_dir} has no {CHECKPOINT}; start the run without --resume")
        saved = config_from_dict(read_json(run_dir / CONFIG))
        if _outcome_fields(saved) != _outcome_fields(config):
            raise ConfigError(f"--resume: the configuration differs from the one {run_dir} was started with")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: is a file, not a run directory; choose another --out")
    # A start that failed before its first checkpoint leaves config.json alone: nothing to keep, start over.
    # A search's study (and SQLite's journal beside it) stays: the run continues it.
    left = {path.name for path in run_dir.iterdir()} if run_dir.exists() else set()
    if {name for name in left if not name.startswith(STUDY)} - {CONFIG}:
        raise ArtifactError(f"{run_dir} is not empty; choose a new --out, or continue it with --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG, config.to_dict())


def refit_run(run_dir: str | Path, dataset: PreparedDataset, out: str | Path) -> tuple[Artifact, TrainResult]:
    """Retrain the validated neural run ``run_dir`` on all training sessions (validation tail included) into ``out``.

    The configuration is the run's own; the number of epochs is the one its validation selected (the same
    learning-rate schedule, stopped there); a fused run keeps its chosen rule and weight and refits its
    partner on all training sessions too, as a tuned baseline is refitted after tuning. Nothing is selected:
    the refit has no validation split.

    Raises:
        ArtifactError: ``run_dir`` is not a finished neural run with a selected epoch, or was made from other data.
    """
    source = load_artifact(run_dir)
    best_epoch = source.metrics.get("best_epoch")
    if not is_neural(source.config.model_name) or not isinstance(best_epoch, int) or best_epoch < 1:
        raise ArtifactError(f"{run_dir}: a refit needs a neural run whose validation selected an epoch")
    valid_fraction = source.config.data.valid_fraction
    if source.meta.get("train_sessions_sha256") != sessions_digest(dataset.validation_split(valid_fraction)[0]):
        raise ArtifactError(f"{run_dir} was not trained on this dataset's training sessions; give the data it used")
    data = TrainingData.for_refit(dataset, valid_fraction)
    artifact, result = fit_run(source.config, data, out, stop_after=best_epoch)
    artifact.metrics.update({"refit_of": str(run_dir), "selected_on_validation": source.metrics})
    write_json_atomic(Path(out) / "metrics.json", artifact.metrics)
    return artifact, result
