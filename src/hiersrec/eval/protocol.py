"""The evaluation protocol: full ranking of every test case, metrics averaged once over all cases."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hiersrec.data.batching import iter_prefix_batches
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import MetricSums, TiePolicy, target_ranks
from hiersrec.progress import progress

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
PROTOCOLS = {
    "all_prefixes": "every prefix of every test session predicts its next click (SR-GNN protocol)",
    "last_item": "the last click of each test session is predicted from the clicks before it",
}


@dataclass
class EvalReport:
    """What an evaluation measured, with everything needed to interpret and reproduce it.

    Attributes:
        protocol: key of `PROTOCOLS`.
        ties: tie policy of the ranks.
        n_sessions: test sessions read.
        n_cases: (prefix, target) cases ranked.
        n_items: size of the ranking (all real items: full ranking).
        metrics: ``"hr@20"``, ``"mrr@20"``, ``"ndcg@20"``, ``"cat_acc@1"``... -> mean over cases.
        seconds: wall time of scoring and ranking.
        model: name and configuration of the evaluated model.
        extra: provenance added by the caller (data fingerprint, commit, split...).
    """

    protocol: str
    ties: str
    n_sessions: int
    n_cases: int
    n_items: int
    metrics: dict[str, float]
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


def evaluate(
    model: Any,
    sessions: SessionData,
    catalog: ItemCatalog,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    protocol: str = "all_prefixes",
    ties: TiePolicy = "pessimistic",
    batch_size: int = 512,
    max_len: int = 50,
    show_progress: bool = False,
) -> EvalReport:
    """Rank every test case against all items and average the metrics once over all cases.

    Item metrics (``hr@k``, ``mrr@k``, ``ndcg@k``) need ``model.score(batch) -> (B, V)``; next-category
    accuracy (``cat_acc@1``, ``cat_acc@5``) is added when the model also has
    ``model.score_categories(batch) -> (B, C)``. A model with only ``score_categories`` gets only the
    category metrics.

    Args:
        model: any object with ``score`` and/or ``score_categories`` taking a `SessionBatch`.
        sessions: the sessions to evaluate (the test split; never the split used for model selection).
        catalog: item attributes (categories of prefixes and targets).
        ks: cutoffs.
        protocol: a key of `PROTOCOLS`.
        ties: tie policy of the ranks (pessimistic by default).
        batch_size: cases scored at once.
        max_len: longest prefix given to the model (most recent clicks kept).
        show_progress: show a progress bar on stderr.

    Returns:
        The `EvalReport`.

    Example:
        >>> report = evaluate(Pop().fit(train, catalog), test, catalog, ks=[20])  # doctest: +SKIP
        >>> report.metrics["hr@20"]  # doctest: +SKIP
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {sorted(PROTOCOLS)}")
    has_items = hasattr(model, "score")
    omitted = category_metrics_omitted(model, catalog)
    has_categories = hasattr(model, "score_categories") and omitted is None
    assert has_items or hasattr(model, "score_categories"), f"{type(model).__name__} has no score"
    targets = sessions.target_positions(protocol)
    sums = MetricSums()
    started = time.perf_counter()
    batches = iter_prefix_batches(sessions, catalog, targets, batch_size, max_len)
    with (
        torch.inference_mode(),
        progress(total=targets.size, desc="evaluate", unit="case", disable=not show_progress, leave=False) as bar,
    ):
        for batch in batches:
            if has_items:
                sums.add_ranks(target_ranks(model.score(batch).float(), batch.target_items, ties), ks)
            if has_categories:
                sums.add_category_hits(model.score_categories(batch).float(), batch.target_categories)
            bar.update(len(batch))
    n_cases = int(targets.size)
    metrics = sums.means(n_cases)
    return EvalReport(
        protocol=protocol,
        ties=ties,
        n_sessions=sessions.n_sessions,
        n_cases=n_cases,
        n_items=catalog.n_items,
        metrics=dict(sorted(metrics.items(), key=lambda kv: _metric_order(kv[0]))),
        seconds=time.perf_counter() - started,
        model=describe_model(model),
        extra={"category_metrics_omitted": omitted} if omitted and hasattr(model, "score_categories") else {},
    )


def category_metrics_omitted(model: Any, catalog: ItemCatalog) -> str | None:
    """Why next-category accuracy would mean nothing for ``model`` on ``catalog``, or None when it is reported.

    With one category every guess is right (100%); a category head that no loss trained (HierSRec with
    ``category_loss_weight = 0``) guesses at chance. Both are left out of the metrics rather than reported.
    """
    if not hasattr(model, "score_categories"):
        return "the model predicts no category"
    if catalog.n_categories < 2:
        return f"the catalogue has {catalog.n_categories} category: every guess is right"
    if not getattr(model, "predicts_categories", True):
        return "the model's category head is not trained (category_loss_weight = 0)"
    return None


def _metric_order(key: str) -> tuple[int, int, str]:
    name, k = key.split("@")
    order = ["hr", "mrr", "ndcg", "cat_acc"]
    return (order.index(name) if name in order else len(order), int(k), name)


def describe_model(model: Any) -> dict[str, Any]:
    """Name and hyperparameters of a model, for reports: ``model.describe()`` when it has one."""
    if hasattr(model, "describe"):
        return model.describe()
    return {"name": type(model).__name__}


def format_table(reports: dict[str, EvalReport], keys: Sequence[str] | None = None) -> str:
    """A fixed-width text table of several reports (rows = models, columns = metrics in percent)."""
    if not reports:
        return "(no results)"
    first = next(iter(reports.values()))
    if keys is None:
        keys = sorted({key for report in reports.values() for key in report.metrics}, key=_metric_order)
    width = max(8, *(len(name) for name in reports))
    header = f"{'model':<{width}}  " + "  ".join(f"{k:>9}" for k in keys) + "  seconds"
    lines = [header, "-" * len(header)]
    for name, report in reports.items():
        cells = []
        for key in keys:
            value = report.metrics.get(key)
            cells.append(f"{'-':>9}" if value is None else f"{100 * value:>9.2f}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells) + f"  {report.seconds:7.1f}")
    note = (
        f"protocol={first.protocol} ties={first.ties} cases={first.n_cases} items={first.n_items} "
        "(metrics in %, full ranking)"
    )
    return "\n".join([*lines, note])
