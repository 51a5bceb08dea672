"""Random-search tuning of a baseline's hyperparameters on a validation split cut from the training sessions.

The tuner takes the *training* sessions only and cuts the validation split itself (the chronological tail,
whole sessions, `SessionData.split_tail`): each trial fits on the head and is scored on the tail, so no
test session can take part in model selection. Trial 0 is always the model's defaults, so tuning never
returns a configuration that validated worse than them.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError
from hiersrec.eval.protocol import evaluate
from hiersrec.models import baseline_class, default_params, make_baseline, search_space
from hiersrec.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningResult:
    """The outcome of `tune_baseline`.

    Attributes:
        name: baseline name.
        metric: the validation metric maximised (e.g. ``"mrr@20"``).
        best_params: all hyperparameters of the best trial.
        best_score: its validation metric.
        trials: one row per trial: ``trial``, ``params``, ``metric`` value, all validation ``metrics``,
            ``fit_seconds``, ``eval_seconds``.
        n_fit_sessions: sessions the trials were fitted on (the head).
        n_valid_sessions: sessions they were scored on (the tail).
    """

    name: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    n_fit_sessions: int = 0
    n_valid_sessions: int = 0

    @property
    def best_metrics(self) -> dict[str, float]:
        """All validation metrics of the best trial."""
        return next(row["metrics"] for row in self.trials if row["params"] == self.best_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


def tune_baseline(
    name: str,
    train: SessionData,
    catalog: ItemCatalog,
    *,
    n_trials: int = 20,
    seed: int = 0,
    valid_fraction: float = 0.1,
    max_valid_sessions: int | None = None,
    valid: SessionData | None = None,
    protocol: str = "all_prefixes",
    metric: str = "mrr@20",
    space: Mapping[str, Sequence[Any]] | None = None,
    batch_size: int = 512,
    show_progress: bool = False,
) -> TuningResult:
    """Random search over a baseline's hyperparameters, scored on the validation tail of ``train``.

    Args:
        name: a key of `hiersrec.models.BASELINES`.
        train: the training sessions (never the test split); the tail ``valid_fraction`` of them is held out.
        catalog: item attributes.
        n_trials: configurations tried, the defaults included (fewer when the space has fewer).
        seed: seed of the random draws.
        valid_fraction: share of the (most recent) training sessions held out for validation.
        valid: the source's own validation sessions (leave-one-out data: ``train`` extended by one click each);
            then every trial fits on all of ``train`` and ``valid_fraction`` is not used.
        protocol: the validation cases: ``"all_prefixes"``, or ``"last_item"`` with a source's ``valid``, the same
            cases training selects on.
        max_valid_sessions: score only the earliest this many held-out sessions (those right after the head,
            as the test period follows training); None: all of them.
        metric: validation metric to maximise, ``"<hr|mrr|ndcg>@k"`` or ``"cat_acc@<1|5>"``.
        space: values to try per hyperparameter (default: the model's ``SEARCH_SPACE``).
        batch_size: prefixes scored at once.
        show_progress: progress bar over trials on stderr.

    Returns:
        The `TuningResult`; refit ``make_baseline(name, **result.best_params)`` on all of ``train``.

    Raises:
        ConfigError: unknown baseline, parameter or metric; a non-positive budget.
    """
    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}")
    _metric_cutoffs(metric)  # an unknown metric fails before anything is fitted
    space = dict(search_space(name) if space is None else space)
    make_baseline(name, **{key: values[0] for key, values in space.items() if values})  # unknown keys fail here
    head, tail = (train, valid) if valid is not None else train.split_tail(valid_fraction)
    if max_valid_sessions is not None:
        tail = tail.subset(np.arange(min(max_valid_sessions, tail.n_sessions)))
    candidates = _draw_configurations(space, trial_zero(name, space), n_trials, np.random.default_rng(seed))

    trials: list[dict[str, Any]] = []
    for number, params in enumerate(progress(candidates, desc=f"tune {name}", disable=not show_progress)):
        row = score_baseline(name, params, head, tail, catalog, metric=metric, protocol=protocol, batch_size=batch_size)
        trials.append({"trial": number, **row})
        logger.info("%s trial %d %s: %s = %.4f", name, number, params, metric, row["metric"])
    best = max(trials, key=lambda row: row["metric"])  # the first of equals: the defaults win ties
    return TuningResult(
        name=name,
        metric=metric,
        best_params=best["params"],
        best_score=best["metric"],
        trials=trials,
        n_fit_sessions=head.n_sessions,
        n_valid_sessions=tail.n_sessions,
    )


def trial_zero(name: str, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The first configuration of a search: the defaults of ``name``, with the values ``space`` fixes put in.

    A hyperparameter whose space holds a single value is fixed to it (`tune_and_fit` fixes the configured
    values this way).
    """
    return {**default_params(name), **{key: values[0] for key, values in space.items() if len(values) == 1}}


def selection_metric(name: str) -> str:
    """The validation metric a search maximises for fitted model ``name``: ``cat_acc@1`` for category-only models."""
    return "mrr@20" if hasattr(baseline_class(name), "score") else "cat_acc@1"


def score_baseline(
    name: str,
    params: Mapping[str, Any],
    head: SessionData,
    tail: SessionData,
    catalog: ItemCatalog,
    *,
    metric: str = "mrr@20",
    protocol: str = "all_prefixes",
    batch_size: int = 512,
) -> dict[str, Any]:
    """One trial of a search: fit baseline ``name`` with ``params`` on ``head``, score it on ``tail``.

    Args:
        name: a key of `hiersrec.models.BASELINES`.
        params: its hyperparameters (the others keep their defaults).
        head: the sessions to fit on (never the test split).
        tail: the validation sessions.
        catalog: item attributes.
        metric: the metric to read, ``"<hr|mrr|ndcg>@k"`` or ``"cat_acc@<1|5>"``.
        protocol: the validation cases, ``"all_prefixes"`` or ``"last_item"``.
        batch_size: prefixes scored at once.

    Returns:
        ``params``, the ``metric`` value, all validation ``metrics``, ``fit_seconds`` and ``eval_seconds``.

    Raises:
        ConfigError: an unknown metric, or one the model does not report.
    """
    ks = _metric_cutoffs(metric)
    started = time.perf_counter()
    model = make_baseline(name, **params).fit(head, catalog)
    fitted = time.perf_counter()
    report = evaluate(model, tail, catalog, ks=ks, batch_size=batch_size, protocol=protocol)
    if metric not in report.metrics:
        raise ConfigError(f"baseline {name!r} does not report {metric!r}; it reports {sorted(report.metrics)}")
    return {
        "params": dict(params),
        "metric": report.metrics[metric],
        "metrics": report.metrics,
        "fit_seconds": fitted - started,
        "eval_seconds": report.seconds,
    }


def _metric_cutoffs(metric: str) -> tuple[int, ...]:
    kind, _, k = metric.partition("@")
    valid = (kind in ("hr", "mrr", "ndcg") and k.isdigit() and int(k) >= 1) or metric in ("cat_acc@1", "cat_acc@5")
    if not valid:
        raise ConfigError(f"unknown metric {metric!r}; use 'hr@k', 'mrr@k', 'ndcg@k', 'cat_acc@1' or 'cat_acc@5'")
    return (int(k),) if kind != "cat_acc" else (1,)


def _draw_configurations(
    space: Mapping[str, Sequence[Any]], defaults: dict[str, Any], n_trials: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The defaults first, then distinct random points of the grid (``n_trials`` in all, at most)."""
    keys = [key for key, values in space.items() if len(values)]
    points = itertools.product(*(range(len(space[key])) for key in keys))
    grid_size = math.prod(len(space[key]) for key in keys)
    if grid_size <= 4 * n_trials:  # small grids: a random order of all points
        order = [tuple(point) for point in points]
        order = [order[i] for i in rng.permutation(len(order))]
    else:  # large grids: draw until enough distinct points (the grid is 4x larger, so this ends quickly)
        order = (tuple(int(rng.integers(len(space[key]))) for key in keys) for _ in itertools.count())
    configurations = [defaults]
    seen = {tuple(defaults[key] for key in keys)}
    for point in order:
        if len(configurations) >= n_trials:
            break
        values = tuple(space[key][i] for key, i in zip(keys, point, strict=True))
        if values not in seen:
            seen.add(values)
            configurations.append({**defaults, **dict(zip(keys, values, strict=True))})
    return configurations


@dataclass
class FittedBaseline:
    """What `tune_and_fit` produced: the fitted model, its tuning (None when not tuned) and the fit time."""

    model: Any
    params: dict[str, Any]
    tuning: TuningResult | None
    fit_seconds: float


def tune_and_fit(
    name: str,
    params: Mapping[str, Any],
    train: SessionData,
    catalog: ItemCatalog,
    *,
    tune_trials: int = 0,
    valid_fraction: float = 0.1,
    valid: SessionData | None = None,
    protocol: str = "all_prefixes",
    show_progress: bool = False,
) -> FittedBaseline:
    """Optionally tune fitted model ``name`` on the validation tail of ``train``, then fit it on all of ``train``.

    Values in ``params`` are held fixed; the rest of the model's `search_space` is searched (``tune_trials``
    trials, 0: no search). Item models maximise ``mrr@20``, category-only models ``cat_acc@1``. ``valid`` and
    ``protocol`` are `tune_baseline`'s: a source's own validation split and its cases.
    """
    params = dict(params)
    tuning = None
    if tune_trials:
        space = {**search_space(name), **{key: [value] for key, value in params.items()}}
        tuning = tune_baseline(
            name,
            train,
            catalog,
            n_trials=tune_trials,
            space=space,
            valid_fraction=valid_fraction,
            valid=valid,
            protocol=protocol,
            metric=selection_metric(name),
            show_progress=show_progress,
        )
        params = tuning.best_params
    started = time.perf_counter()
    model = make_baseline(name, **params).fit(train, catalog)
    return FittedBaseline(model, params, tuning, time.perf_counter() - started)
