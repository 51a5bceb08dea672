"""Candidate generation measured against full ranking: what recall is lost, what latency is gained.

For every test case and every budget, the candidates are the items of the categories chosen from the
model's category scores (`select_categories`); only they are ranked. Ranks come from the model's own
``score`` by comparison with the target's score (`hiersrec.eval.metrics.target_ranks`, same tie policy as the
evaluator), with every non-candidate scored ``-inf``; a target outside the candidates gets rank ``inf``, a miss
at every cutoff. The 100% budget therefore reproduces full ranking exactly.

Latency, when the model ranks candidates itself (`candidate_support`: HierSRec), is the time of the search
that serving runs: choosing the categories plus `CategoryIndex.search` with the model's `ItemQuery` (or the
model's full-ranking `score_query`), batched over the evaluation batches and, on a sample of cases, one
session at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from hiersrec.data.batching import iter_prefix_batches, last_clicks
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.metrics import MetricSums, TiePolicy, target_ranks
from hiersrec.eval.protocol import describe_model
from hiersrec.models.base import QueryRecommender, candidate_support
from hiersrec.progress import progress
from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, select_categories
from hiersrec.retrieval.index import CategoryIndex, top_k

DEFAULT_BUDGETS: tuple[str, ...] = ("1%", "2%", "4%", "8%", "16%", "100%")


@dataclass
class BudgetResult:
    """One budget's figures, averaged over all cases.

    Attributes:
        budget: the budget's label (``"4%"``, ``"5 categories"``).
        candidate_recall: share of cases whose target is among the candidates.
        top_overlap: share of the full ranking's top ``k`` items that the candidate ranking also puts in its
            top ``k`` (the "recall of the exact top k" of approximate-search benchmarks).
        metrics: ``"hr@20"``, ``"mrr@20"``, ``"ndcg@20"`` with candidates only.
        relative: each metric divided by its full-ranking value (1.0 = nothing lost).
        mean_candidate_fraction: mean share of the catalogue ranked.
        mean_categories: mean number of categories taken.
        batch_ms_per_case: search time per case in the first evaluation batches (None without a query model).
        single_ms_p50: median search time of one session alone (None when not timed).
        single_ms_p99: 99th percentile of the same.
    """

    budget: str
    candidate_recall: float
    top_overlap: float
    metrics: dict[str, float]
    relative: dict[str, float]
    mean_candidate_fraction: float
    mean_categories: float
    batch_ms_per_case: float | None = None
    single_ms_p50: float | None = None
    single_ms_p99: float | None = None


@dataclass
class CandidateReport:
    """Full ranking and every budget side by side, with what is needed to reproduce them.

    Attributes:
        protocol: evaluation protocol (`hiersrec.eval.protocol.PROTOCOLS`).
        ties: tie policy of the ranks.
        k: cutoff of the metrics.
        n_cases: cases ranked.
        n_items: real items in the catalogue.
        n_categories: real categories.
        full: full-ranking row (budget ``"full"``: recall 1, fraction 1, every category).
        budgets: one row per budget, in the order asked.
        seconds: wall time of the whole evaluation.
        model: name and configuration of the model.
        extra: provenance added by the caller.
    """

    protocol: str
    ties: str
    k: int
    n_cases: int
    n_items: int
    n_categories: int
    full: BudgetResult
    budgets: list[BudgetResult]
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


class _Sums(MetricSums):
    # One budget's metric sums, and its search timings.
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.timed_cases = 0
        self.single: list[float] = []


def evaluate_candidates(
    model: Any,
    sessions: SessionData,
    catalog: ItemCatalog,
    *,
    budgets: Sequence[str | float | CandidateBudget] = DEFAULT_BUDGETS,
    k: int = 20,
    protocol: str = "all_prefixes",
    ties: TiePolicy = "pessimistic",
    batch_size: int = 512,
    max_len: int = 50,
    timed_cases: int = 4096,
    single_session_sample: int = 200,
    show_progress: bool = False,
) -> CandidateReport:
    """Rank every test case with category candidates at each budget, and with all items, in one pass.

    Args:
        model: an object with ``score(batch) -> (B, V)`` and ``score_categories(batch) -> (B, C)``; when
            `candidate_support` accepts it (HierSRec), one ``query`` gives both and search latency is measured.
        sessions: the sessions to evaluate (the test split; never the one used for model selection).
        catalog: item categories.
        budgets: candidate budgets (`CandidateBudget.parse` forms: ``"4%"``, ``0.04``, ``"category:5"``).
        k: cutoff of HR, MRR and NDCG.
        protocol: ``"all_prefixes"`` or ``"last_item"``.
        ties: tie policy of the ranks.
        batch_size: cases scored at once.
        max_len: longest prefix given to the model.
        timed_cases: cases (the first batches) whose batched search is timed.
        single_session_sample: cases (the first ones) whose search is also timed one session at a time.
        show_progress: progress bar on stderr.

    Returns:
        The `CandidateReport`.

    Example:
        >>> report = evaluate_candidates(model, data.test, data.catalog, budgets=["4%", "100%"])  # doctest: +SKIP
        >>> report.budgets[0].candidate_recall, report.budgets[0].relative["mrr@20"]  # doctest: +SKIP
    """
    parsed = [CandidateBudget.parse(b) for b in budgets]
    labels = ["full", *(b.label for b in parsed)]
    item_category = torch.from_numpy(catalog.item_category)
    sizes = torch.from_numpy(CategoryLayout.from_catalog(catalog).sizes)
    index = _index(model, catalog)
    targets = sessions.target_positions(protocol)
    sums = {label: _Sums() for label in labels}
    started = time.perf_counter()
    # Whole prefixes, so that every item of a session can join the candidates; the model reads its last max_len.
    longest = int(sessions.lengths.max(initial=1))
    batches = iter_prefix_batches(sessions, catalog, targets, batch_size, max(max_len, longest))
    with (
        torch.inference_mode(),
        progress(total=targets.size, desc="candidates", unit="case", disable=not show_progress, leave=False) as bar,
    ):
        for whole in batches:
            batch = last_clicks(whole, max_len)
            scores, category_scores, query = _score(model, batch, index)  # (B, V), (B, C)
            sums["full"].add_ranks(target_ranks(scores, batch.target_items, ties), [k])
            counts = _counts_by_category(scores, batch.target_items, item_category, sizes.numel())
            target_category = item_category[batch.target_items].unsqueeze(1)  # (B, 1)
            full_ids, full_scores = top_k(scores, k)  # (B, k)
            full_real = full_scores > float("-inf")
            session = _SessionItems.of(whole, scores)
            for budget, label in zip(parsed, labels[1:], strict=True):
                selected = select_categories(category_scores, sizes, budget)  # (B, C)
                in_selected = selected.gather(1, target_category).squeeze(1)
                extra = session.outside(selected, item_category) if budget.session_items else None
                inside = in_selected if extra is None else in_selected | session.holds_target(extra)
                ranks = _ranks(counts, selected, ties, in_selected, session.counts(extra))
                sums[label].add_ranks(torch.where(inside, ranks, torch.inf), [k])
                sums[label].add("recall", inside)
                # A full-ranking top-k item that is a candidate is also in the candidates' top k.
                kept = selected.gather(1, item_category[full_ids]) & full_real
                if extra is not None:
                    kept |= (full_ids.unsqueeze(2) == session.items.masked_fill(~extra, -1).unsqueeze(1)).any(2)
                sums[label].add("overlap", kept.sum(dim=1) / full_real.sum(dim=1).clamp(min=1))
                n_extra = 0 if extra is None else extra.sum(dim=1)
                sums[label].add("fraction", ((selected * sizes).sum(dim=1) + n_extra) / catalog.n_items)
                sums[label].add("categories", selected.sum(dim=1))
            n_timed = sums["full"].timed_cases
            if index is not None and n_timed < timed_cases:
                n_single = max(0, min(len(batch), single_session_sample - n_timed))
                _time_search(model, query, whole.items, index, parsed, labels, sums, k, n_single)
            bar.update(len(batch))
    n_cases = int(targets.size)
    rows_out = [_result(label, sums, n_cases, catalog.n_categories) for label in labels]
    return CandidateReport(
        protocol=protocol,
        ties=ties,
        k=k,
        n_cases=n_cases,
        n_items=catalog.n_items,
        n_categories=catalog.n_categories,
        full=rows_out[0],
        budgets=rows_out[1:],
        seconds=time.perf_counter() - started,
        model=describe_model(model),
    )


def _index(model: Any, catalog: ItemCatalog) -> CategoryIndex | None:
    # No served candidate search to time without candidates, or without an item query (a fused model).
    if candidate_support(model) is not None or not isinstance(model, QueryRecommender):
        return None
    with torch.inference_mode():
        embeddings = model.item_output_embeddings().detach().float().clone()
    return CategoryIndex.from_catalog(embeddings, catalog)


def _score(model: Any, batch: Any, index: CategoryIndex | None):
    # With a query model, one `query` gives both heads; its item scores are exactly `model.score`'s.
    if index is None:
        return model.score(batch).float(), model.score_categories(batch).float(), None
    query = model.query(batch)
    return model.score_query(query).float(), query.category_logits.float(), query


def _counts_by_category(scores: torch.Tensor, targets: torch.Tensor, item_category: torch.Tensor, n_columns: int):
    # (B, C) items of each category scoring above, and equal to, each row's target: every budget's rank is a
    # sum over its chosen categories, so the (B, V) comparison is done once per batch, not once per budget.
    target_scores = scores.gather(1, targets.unsqueeze(1))
    index = item_category.expand(scores.shape)
    above = torch.zeros((scores.shape[0], n_columns), dtype=torch.int32).scatter_add_(
        1, index, (scores > target_scores).int()
    )
    equal = torch.zeros_like(above).scatter_add_(1, index, (scores == target_scores).int())
    return above, equal


@dataclass
class _SessionItems:
    # Each case's distinct prefix items (the clicks the model reads) with their full-ranking scores, for budgets
    # whose candidates include them.
    items: torch.Tensor  # (B, T) item_idx, 0 = padding or a repeat within the row
    scores: torch.Tensor  # (B, T) their full-ranking scores
    targets: torch.Tensor  # (B,) target items
    target_scores: torch.Tensor  # (B, 1)

    @classmethod
    def of(cls, batch: Any, scores: torch.Tensor) -> _SessionItems:
        items, _ = batch.items.sort(dim=1)
        repeated = torch.zeros_like(items, dtype=torch.bool)
        repeated[:, 1:] = items[:, 1:] == items[:, :-1]
        items = items.masked_fill(repeated, 0)
        targets = batch.target_items
        return cls(items, scores.gather(1, items), targets, scores.gather(1, targets.unsqueeze(1)))

    def outside(self, selected: torch.Tensor, item_category: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the session items that the chosen categories do not already hold."""
        return (self.items > 0) & ~selected.gather(1, item_category[self.items])

    def holds_target(self, extra: torch.Tensor) -> torch.Tensor:
        return (extra & (self.items == self.targets.unsqueeze(1))).any(dim=1)

    def counts(self, extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        # Extra candidates scoring above, and equal to, each row's target (the target itself not counted).
        if extra is None:
            return None
        above = ((self.scores > self.target_scores) & extra).sum(dim=1)
        equal = ((self.scores == self.target_scores) & extra & (self.items != self.targets.unsqueeze(1))).sum(dim=1)
        return above, equal


def _ranks(
    counts: tuple[torch.Tensor, torch.Tensor],
    selected: torch.Tensor,
    ties: TiePolicy,
    target_selected: torch.Tensor,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    # Rank among the candidates (the chosen categories' items, plus `extra` ones) under the tie policy of
    # `target_ranks`, for a target among them; `target_selected` says whether its category was chosen.
    above = (counts[0] * selected).sum(dim=1).float()
    equal_others = (counts[1] * selected).sum(dim=1).float() - target_selected.float()
    if extra is not None:
        above, equal_others = above + extra[0], equal_others + extra[1]
    if ties == "optimistic":
        return above + 1.0
    if ties == "pessimistic":
        return above + equal_others + 1.0
    return above + 1.0 + equal_others / 2.0


def _time_search(model, query, items, index, budgets, labels, sums, k, n_single) -> None:
    # The searches serving runs: full ranking through the model's own scores, candidates through the index.
    searches = {}
    for budget, label in zip(budgets, labels[1:], strict=True):
        searches[label] = lambda q, items, budget=budget: index.search(
            q,
            k,
            selected=select_categories(q.category_logits, index.sizes, budget),
            include=items if budget.session_items else None,
        )
    searches["full"] = lambda q, _items: top_k(model.score_query(q), k)
    for label, search in searches.items():
        started = time.perf_counter()
        search(query, items)
        sums[label].seconds += time.perf_counter() - started
        sums[label].timed_cases += query.vectors.shape[0]
        for row in range(n_single):
            started = time.perf_counter()
            search(query.rows(slice(row, row + 1)), items[row : row + 1])
            sums[label].single.append(time.perf_counter() - started)


def _result(label: str, all_sums: dict[str, _Sums], n_cases: int, n_categories: int) -> BudgetResult:
    sums, full = all_sums[label], all_sums["full"]
    metric_keys = [key for key in sums.totals if "@" in key]
    metrics = {key: sums.mean(key, n_cases) for key in metric_keys}
    relative = {
        key: value / full.mean(key, n_cases) if full.mean(key, n_cases) else float("nan")
        for key, value in metrics.items()
    }
    is_full = label == "full"
    single = np.array(sums.single) * 1e3
    return BudgetResult(
        budget=label,
        candidate_recall=1.0 if is_full else sums.mean("recall", n_cases),
        top_overlap=1.0 if is_full else sums.mean("overlap", n_cases),
        metrics=metrics,
        relative=relative,
        mean_candidate_fraction=1.0 if is_full else sums.mean("fraction", n_cases),
        mean_categories=float(n_categories) if is_full else sums.mean("categories", n_cases),
        batch_ms_per_case=1e3 * sums.seconds / sums.timed_cases if sums.timed_cases else None,
        single_ms_p50=float(np.percentile(single, 50)) if single.size else None,
        single_ms_p99=float(np.percentile(single, 99)) if single.size else None,
    )


def format_candidate_table(report: CandidateReport) -> str:
    """A fixed-width text table: one row per budget after the full-ranking row (metrics in percent)."""
    keys = [f"hr@{report.k}", f"mrr@{report.k}"]
    width = max(len("budget"), *(len(row.budget) for row in [report.full, *report.budgets]))
    header = (
        f"{'budget':>{width}}  {'recall':>7}  {'top' + str(report.k):>7}  {'items%':>7}  {'cats':>6}  "
        + "  ".join(f"{key:>8}  {'rel':>6}" for key in keys)
        + f"  {'ms/case':>8}  {'1-sess p50':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in [report.full, *report.budgets]:
        cells = "  ".join(f"{100 * row.metrics[key]:>8.2f}  {100 * row.relative[key]:>5.1f}%" for key in keys)
        batch = "-" if row.batch_ms_per_case is None else f"{row.batch_ms_per_case:.4f}"
        single = "-" if row.single_ms_p50 is None else f"{row.single_ms_p50:.3f}"
        lines.append(
            f"{row.budget:>{width}}  {100 * row.candidate_recall:>6.2f}%  {100 * row.top_overlap:>6.2f}%  "
            f"{100 * row.mean_candidate_fraction:>6.2f}%  "
            f"{row.mean_categories:>6.1f}  {cells}  {batch:>8}  {single:>10}"
        )
    lines.append(
        f"protocol={report.protocol} ties={report.ties} cases={report.n_cases} items={report.n_items} "
        f"categories={report.n_categories} (recall = target among the candidates; top{report.k} = share of the "
        f"full ranking's top {report.k} kept; rel = share of the full-ranking value; a target outside the "
        "candidates is a miss)"
    )
    return "\n".join(lines)
