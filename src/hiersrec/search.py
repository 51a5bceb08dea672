"""Hyperparameter search for every registered model with Optuna: seeded TPE, pruning, a study that resumes.

Each trial trains (neural models) or fits (fitted models) one configuration on the sessions to fit on and is
scored on the validation sessions; the test split is never given to the search. Trial 0 is the configured
run itself (the defaults, with what the configuration sets), so the best trial never validates worse than
it. The searched values come from each model's space: a fitted model's ``SEARCH_SPACE``, a neural model's
`NEURAL_SEARCH_SPACES` entry; a value the configuration sets is held fixed.

A neural trial reports its validation MRR@k after every epoch; a `MedianPruner` stops trials that trail
the median of the completed ones at that epoch (`optuna.TrialPruned` raised from the training loop's
``on_epoch_end``). The study lives in a SQLite file: running the same search again keeps the finished
trials, runs again the one an interruption cut off, and stops at the same total of ``n_trials``. The
sampler is seeded by (seed, trial position), so a resumed search draws what an uninterrupted one draws.

Optuna is an optional extra (``pip install 'hiersrec[search]'``), imported only when a search runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hiersrec.config import FittedModelConfig, RunConfig, TrainConfig
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError, TrainingDivergedError
from hiersrec.models import default_params, is_neural, make_model, search_space, train_defaults
from hiersrec.progress import progress
from hiersrec.train.loop import train
from hiersrec.tuning import score_baseline, selection_metric

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

STUDY = "study.db"
"""File name of a run directory's study (`hiersrec.train.run` keeps it there)."""

PRUNE_AFTER_TRIALS = 3  # completed trials before any is pruned: a median of fewer says little
PRUNE_WARMUP_EPOCHS = 2  # no trial is pruned before this epoch: the first epoch ranks configurations poorly


@dataclass(frozen=True)
class FloatRange:
    """A float hyperparameter drawn from ``[low, high]``, on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False


Domain = tuple[Any, ...] | FloatRange
"""The values of one hyperparameter: a tuple of choices or a `FloatRange`."""

# Every neural model: the peak learning rate (log scale, around the defaults: 2e-3 shared, larger for the
# baselines whose own `train_defaults` say so) and the AdamW decay.
_OPTIMISER: dict[str, Domain] = {
    "train.lr": FloatRange(1e-4, 1e-1, log=True),
    "train.weight_decay": (0.0, 0.01, 0.05, 0.1),
}

NEURAL_SEARCH_SPACES: dict[str, dict[str, Domain]] = {
    # Width from a small set (divisible by the heads), regularisation, and the weight of the category task.
    "hiersrec": {
        **_OPTIMISER,
        "model.d_model": (32, 64, 128),
        "model.dropout": FloatRange(0.0, 0.5),
        "model.category_loss_weight": FloatRange(0.0, 1.0),
    },
    "sasrec": {**_OPTIMISER, "model.d_model": (32, 64, 128), "model.dropout": FloatRange(0.0, 0.5)},
    # The official GRU4Rec tuning searches the layer size and both dropouts.
    "gru4rec": {
        **_OPTIMISER,
        "model.d_model": (64, 100, 200),
        "model.dropout_p_embed": FloatRange(0.0, 0.5),
        "model.dropout_p_hidden": FloatRange(0.0, 0.5),
    },
    "narm": {
        **_OPTIMISER,
        "model.d_model": (64, 100, 128),
        "model.embedding_dropout": FloatRange(0.0, 0.5),
        "model.decoder_dropout": FloatRange(0.0, 0.7),
    },
    "stamp": {**_OPTIMISER, "model.d_model": (64, 100, 128)},
    # CORE's scores are cosines over a temperature: the temperature matters as much as the learning rate.
    "core": {
        **_OPTIMISER,
        "model.d_model": (64, 100, 128),
        "model.temperature": (0.05, 0.07, 0.1, 0.2),
        "model.item_dropout": FloatRange(0.0, 0.5),
    },
    "srgnn": {**_OPTIMISER, "model.d_model": (64, 100, 128), "model.n_steps": (1, 2, 3)},
}
"""Searched hyperparameters of each neural model, named ``section.field`` as ``--set`` names them."""


def model_search_space(name: str) -> dict[str, Domain]:
    """The searched hyperparameters of model ``name`` (``"model.k"``, ``"train.lr"``...) and their values.

    Raises:
        ConfigError: an unknown model, or a neural model without a declared space.
    """
    if not is_neural(name):
        return {f"model.{key}": tuple(values) for key, values in search_space(name).items()}
    if name not in NEURAL_SEARCH_SPACES:
        raise ConfigError(f"no search space is declared for {name!r}; add it to hiersrec.search.NEURAL_SEARCH_SPACES")
    return dict(NEURAL_SEARCH_SPACES[name])


@dataclass(frozen=True)
class SearchResult:
    """The outcome of `search_hyperparameters`.

    Attributes:
        name: model name.
        metric: the validation metric maximised (``"mrr@20"``...).
        best_params: the searched values of the best trial (``"train.lr"``...).
        best_score: its validation metric.
        best_metrics: all its validation metrics.
        best_config: the run configuration with ``best_params`` put in (what the final run trains or fits).
        trials: one row per trial in order: ``trial``, ``state`` (complete, pruned or fail), ``params``,
            ``value`` (a pruned trial: its last reported one), ``metrics``, ``seconds``, and when they apply
            ``epochs``, ``best_epoch``, ``error``, ``repeat_of`` (a configuration already tried is not rerun).
        n_trials: the budget (fewer when a space of choices has fewer configurations).
        seed: seed of the sampler.
        space: the searched hyperparameters and their values.
        n_fit_sessions: sessions the trials were fitted on.
        n_valid_sessions: sessions they were scored on.
    """

    name: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    best_metrics: dict[str, float]
    best_config: RunConfig
    trials: list[dict[str, Any]]
    n_trials: int
    seed: int
    space: dict[str, Any]
    n_fit_sessions: int
    n_valid_sessions: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``search = "optuna"``, the best configuration as `RunConfig.to_dict`)."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"search": "optuna", **fields, "best_config": self.best_config.to_dict()}


class _TrialFailed(Exception):
    """A configuration that cannot be trained (an invalid combination, a diverging loss): recorded, not raised."""


def search_hyperparameters(
    config: RunConfig,
    train_sessions: SessionData,
    valid_sessions: SessionData,
    catalog: ItemCatalog,
    *,
    storage: str | Path,
    n_trials: int,
    protocol: str = "all_prefixes",
    fixed: Collection[str] = (),
    space: Mapping[str, Domain] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    identity: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> SearchResult:
    """Search the hyperparameters of ``config``'s model with seeded TPE, on the validation sessions only.

    Args:
        config: the configured run; its values for the searched hyperparameters are trial 0, its
            ``train.seed`` seeds the sampler.
        train_sessions: sessions every trial fits or trains on (never the test split).
        valid_sessions: sessions every trial is scored on (the validation tail, or the source's validation).
        catalog: item attributes.
        storage: the SQLite file of the study; an existing one is continued.
        n_trials: trials in all, trial 0 and those of earlier runs of this study included.
        protocol: validation cases, ``"all_prefixes"`` or ``"last_item"``.
        fixed: hyperparameters (``"section.field"``) held at their configured values. Besides these, a
            fitted model holds the parameters its configuration lists, a neural model the fields whose
            configured values differ from the defaults.
        space: the values to search (default: `model_search_space`), named as there; a space that does not
            hold the configured value is widened to it.
        pruner: how neural trials are stopped early (default: median pruning after `PRUNE_AFTER_TRIALS`
            trials, from epoch `PRUNE_WARMUP_EPOCHS`).
        identity: what the study is kept for (default: ``config.to_dict()``); continuing a study of another
            identity or space is refused.
        show_progress: a progress bar over the trials on stderr.

    Returns:
        The `SearchResult`: train or fit ``result.best_config`` for the final run.

    Raises:
        ConfigError: optuna is not installed; a non-positive budget; an unknown hyperparameter in ``space``;
            ``storage`` holds a study of another configuration; no trial completed.
    """
    optuna = _import_optuna()
    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}")
    name = config.model_name
    domains = _searched_domains(config, fixed, model_search_space(name) if space is None else space)
    metric = f"mrr@{config.train.valid_k}" if is_neural(name) else selection_metric(name)
    record = {
        "identity": config.to_dict() if identity is None else identity,
        "space": _describe(domains),
        "metric": metric,
    }
    budget = min(n_trials, _n_configurations(domains))
    objective = _train_trial if is_neural(name) else _fit_trial

    def run_trial(trial: optuna.Trial, trial_config: RunConfig) -> tuple[float, dict[str, float]]:
        return objective(trial, trial_config, train_sessions, valid_sessions, catalog, protocol, metric)

    with _quiet(optuna), _open_study(optuna, storage, pruner, record) as study:
        _close_interrupted_trials(optuna, study)
        if not _finished(optuna, study) and not study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
            study.enqueue_trial({key: _configured_value(config, key) for key in domains})  # trial 0
        done = len(_finished(optuna, study))
        bar = progress(
            total=budget, initial=min(done, budget), desc=f"search {name}", unit="trial", disable=not show_progress
        )
        with bar:
            while done < budget:
                # Seeded by position: a resumed search samples what an uninterrupted one would have.
                study.sampler = optuna.samplers.TPESampler(seed=_trial_seed(config.train.seed, done))
                _run(optuna, study, config, domains, run_trial)
                done = len(_finished(optuna, study))
                bar.update()
        finished = _finished(optuna, study)[:budget]
    return _result(config, finished, metric, budget, domains, train_sessions, valid_sessions)


def configure(config: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """``config`` with ``params`` (``"model.k"``, ``"train.lr"``...) put in; a fitted model lists all its parameters.

    Raises:
        ConfigError: the values do not make a valid configuration (e.g. ``d_model`` not divisible by the heads).
    """
    values: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in params.items():
        section, _, field = key.partition(".")
        values[section][field] = value
    if isinstance(config.model, FittedModelConfig):
        every = {**default_params(config.model_name), **config.model.params, **values["model"]}
        model = FittedModelConfig(name=config.model_name, params=every)
    else:
        model = dataclasses.replace(config.model, **values["model"])
    return dataclasses.replace(config, model=model, train=dataclasses.replace(config.train, **values["train"]))


def _import_optuna():
    try:
        import optuna
    except ImportError as error:
        raise ConfigError(
            f"--search optuna needs the 'search' extra ({error}); pip install 'hiersrec[search]'"
        ) from None
    return optuna


def _searched_domains(config: RunConfig, fixed: Collection[str], space: Mapping[str, Domain]) -> dict[str, Domain]:
    name = config.model_name
    fields = {"model": set(default_params(name)), "train": set(TrainConfig.__dataclass_fields__)}
    for key in space:
        section, _, field = key.partition(".")
        if field not in fields.get(section, ()) or (section == "train" and not is_neural(name)):
            raise ConfigError(
                f"{name!r} has no searchable hyperparameter {key!r}; use 'model.<field>' or 'train.<field>'"
            )
    held = set(fixed) | _set_by_configuration(config)
    return {key: _widened(domain, _configured_value(config, key)) for key, domain in space.items() if key not in held}


def _set_by_configuration(config: RunConfig) -> set[str]:
    if isinstance(config.model, FittedModelConfig):
        return {f"model.{key}" for key in config.model.params}
    # A neural configuration lists every field: the ones it changed are the ones it sets.
    name = config.model_name
    defaults = {"model": default_params(name), "train": {**dataclasses.asdict(TrainConfig()), **train_defaults(name)}}
    configured = {"model": config.model_params, "train": dataclasses.asdict(config.train)}
    return {
        f"{section}.{key}"
        for section, values in defaults.items()
        for key in values
        if configured[section][key] != values[key]
    }


def _configured_value(config: RunConfig, key: str) -> Any:
    section, _, field = key.partition(".")
    if section == "train":
        return getattr(config.train, field)
    return {**default_params(config.model_name), **config.model_params}[field]


def _widened(domain: Domain, value: Any) -> Domain:
    # Trial 0 is the configured value, so the space must hold it.
    if isinstance(domain, FloatRange):
        if domain.log and not value > 0:
            raise ConfigError(f"a log-scale range cannot hold the configured value {value!r}")
        return FloatRange(min(domain.low, value), max(domain.high, value), domain.log)
    return domain if value in domain else (*domain, value)


def _n_configurations(domains: Mapping[str, Domain]) -> float:
    if any(isinstance(domain, FloatRange) for domain in domains.values()):
        return math.inf
    return math.prod(len(domain) for domain in domains.values())


def _describe(domains: Mapping[str, Domain]) -> dict[str, Any]:
    described = {k: dataclasses.asdict(d) if isinstance(d, FloatRange) else list(d) for k, d in domains.items()}
    return json.loads(json.dumps(described))  # as stored in the study, for comparison


def _trial_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    # Optuna logs every trial on stderr; hiersrec's logger and the progress bar already tell it.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _open_study(optuna, path: str | Path, pruner, record: dict[str, Any]) -> Iterator[optuna.Study]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")
    try:
        study = optuna.create_study(
            storage=storage,
            study_name="search",
            direction="maximize",
            pruner=pruner or optuna.pruners.MedianPruner(PRUNE_AFTER_TRIALS, PRUNE_WARMUP_EPOCHS),
            load_if_exists=True,
        )
        record = json.loads(json.dumps(record))
        if "search" not in study.user_attrs:
            study.set_user_attr("search", record)
        elif study.user_attrs["search"] != record:
            raise ConfigError(
                f"{path} holds a search of another configuration or space; run the command it was started with, "
                "or choose a new --out"
            )
        yield study
    finally:
        storage.engine.dispose()  # close the SQLite file


def _close_interrupted_trials(optuna, study) -> None:
    # One writer per study (the run directory's claim): a trial still running was cut off by an interruption.
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _finished(optuna, study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget, in order: complete, pruned, or failed by their configuration."""
    states = optuna.trial.TrialState
    return [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state in (states.COMPLETE, states.PRUNED)
        or (trial.state == states.FAIL and "error" in trial.user_attrs)
    ]


def _run(optuna, study, config: RunConfig, domains: Mapping[str, Domain], run_trial: Callable) -> None:
    states = optuna.trial.TrialState
    trial = study.ask()
    params = {key: _suggest(trial, key, domain) for key, domain in domains.items()}
    started = time.perf_counter()
    # Trials are deterministic: a configuration tried before scores as it did, without training it again.
    earlier = [t for t in _finished(optuna, study) if t.params == params and t.state != states.FAIL]
    try:
        if earlier:
            trial.set_user_attr("repeat_of", _finished(optuna, study).index(earlier[0]))
            if earlier[0].state == states.PRUNED:
                raise optuna.TrialPruned()
            value, metrics = earlier[0].value, earlier[0].user_attrs["metrics"]
        else:
            try:
                value, metrics = run_trial(trial, configure(config, params))
            except (ConfigError, TrainingDivergedError) as error:
                raise _TrialFailed(str(error)) from error
    except optuna.TrialPruned:
        trial.set_user_attr("seconds", time.perf_counter() - started)
        study.tell(trial, state=states.PRUNED)
        logger.info("trial %s %s: pruned", trial.number, params)
        return
    except _TrialFailed as error:
        trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("error", str(error))
        study.tell(trial, state=states.FAIL)
        logger.warning("trial %s %s failed: %s", trial.number, params, error)
        return
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("seconds", time.perf_counter() - started)
    study.tell(trial, value)
    logger.info("trial %s %s: %.4f", trial.number, params, value)


def _suggest(trial, key: str, domain: Domain) -> Any:
    if isinstance(domain, FloatRange):
        return trial.suggest_float(key, domain.low, domain.high, log=domain.log)
    return trial.suggest_categorical(key, domain)


def _fit_trial(trial, config, train_sessions, valid_sessions, catalog, protocol, metric):
    row = score_baseline(
        config.model_name,
        config.model_params,
        train_sessions,
        valid_sessions,
        catalog,
        metric=metric,
        protocol=protocol,
    )
    return row["metric"], row["metrics"]


def _train_trial(trial, config, train_sessions, valid_sessions, catalog, protocol, metric):
    import optuna

    def report(record: dict[str, Any]) -> None:
        trial.set_user_attr("epochs", record["epoch"])
        trial.report(record[f"valid_{metric}"], record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

    torch.manual_seed(config.train.seed)  # initial weights, as the final training draws them
    model = make_model(
        config.model_name, config.model_params, catalog, text_cache_dir=config.data.text_cache_dir or None
    )
    train_config = dataclasses.replace(config.train, show_progress=False)  # one bar: the search's
    result = train(
        model, train_sessions, valid_sessions, catalog, train_config, valid_protocol=protocol, on_epoch_end=report
    )
    trial.set_user_attr("best_epoch", result.best_epoch)
    return result.best_metrics[metric], result.best_metrics


def _result(config, finished, metric, budget, domains, train_sessions, valid_sessions) -> SearchResult:
    rows = [_row(position, trial) for position, trial in enumerate(finished)]
    complete = [row for row in rows if row["state"] == "complete"]
    if not complete:
        errors = sorted({row.get("error", "pruned") for row in rows})
        raise ConfigError(f"none of the {len(rows)} trials of {config.model_name!r} completed: {errors}")
    best = max(complete, key=lambda row: row["value"])  # the first of equals: trial 0 wins ties
    return SearchResult(
        name=config.model_name,
        metric=metric,
        best_params=best["params"],
        best_score=best["value"],
        best_metrics=best["metrics"],
        best_config=configure(config, best["params"]),
        trials=rows,
        n_trials=budget,
        seed=config.train.seed,
        space=_describe(domains),
        n_fit_sessions=train_sessions.n_sessions,
        n_valid_sessions=valid_sessions.n_sessions,
    )


def _row(position: int, trial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "trial": position,
        "state": trial.state.name.lower(),
        "params": dict(trial.params),
        "value": trial.value,
        "metrics": attrs.get("metrics", {}),
        "seconds": attrs.get("seconds"),
        **{key: attrs[key] for key in ("epochs", "best_epoch", "error", "repeat_of") if key in attrs},
    }
