"""Rank-based metrics computed by comparison with the target's score, under an explicit tie policy.

Ranks never come from ``torch.topk`` order, so they do not depend on how a kernel breaks ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

TiePolicy = Literal["pessimistic", "optimistic", "mean"]
TIE_POLICIES: tuple[str, ...] = ("pessimistic", "optimistic", "mean")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, ties: TiePolicy = "pessimistic") -> torch.Tensor:
    """1-based rank of each target among its row's scores.

    Column 0 is padding and never competes: it is excluded whatever its score.

    Ties: ``"optimistic"`` counts only strictly higher scores (rank = #higher + 1); ``"pessimistic"``
    (the default) also counts equal scores of other items, so a model that scores everything equally
    gets the worst rank; ``"mean"`` averages the two.

    Args:
        scores: (B, V) float scores, column 0 = padding.
        targets: (B,) int64 target column indices in 1..V-1.
        ties: the tie policy.

    Returns:
        (B,) float32 ranks.

    Example:
        >>> s = torch.tensor([[float("-inf"), 0.5, 0.5, 0.1]])
        >>> target_ranks(s, torch.tensor([1])).tolist(), target_ranks(s, torch.tensor([1]), "optimistic").tolist()
        ([2.0], [1.0])
    """
    if ties not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {ties!r}; use one of {TIE_POLICIES}")
    real = scores[:, 1:]
    target_scores = real.gather(1, (targets - 1).unsqueeze(1))  # (B, 1)
    if torch.isnan(target_scores).any():
        raise ValueError("a model returned NaN as the score of a target item")
    # One comparison pass per bound: the target itself is among the ">=" scores.
    if ties == "optimistic":
        return ((real > target_scores).sum(dim=1) + 1).float()
    at_least = (real >= target_scores).sum(dim=1).float()  # pessimistic rank
    if ties == "pessimistic":
        return at_least
    higher = (real > target_scores).sum(dim=1).float()
    return (higher + 1.0 + at_least) / 2.0


def hit_rate_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case hit indicator: 1 where the target ranks within the top ``k`` (HR@k; never "P@k")."""
    return (ranks <= k).float()


def reciprocal_rank_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case reciprocal rank, 0 beyond ``k`` (its mean is MRR@k)."""
    return torch.where(ranks <= k, 1.0 / ranks, torch.zeros_like(ranks))


def ndcg_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case NDCG with one relevant item: 1 / log2(rank + 1) within the top ``k``, else 0.

    A fractional rank (``ties="mean"``) gives the interpolated value.
    """
    return torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))


def category_hits_at(category_scores: torch.Tensor, target_categories: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case next-category hit within the top ``k`` categories, by pessimistic rank (padding excluded)."""
    ranks = target_ranks(category_scores, target_categories, ties="pessimistic")
    return hit_rate_at(ranks, k)


CATEGORY_KS: tuple[int, ...] = (1, 5)
"""Cutoffs of the next-category accuracy every evaluation reports."""

RANK_METRICS = {"hr": hit_rate_at, "mrr": reciprocal_rank_at, "ndcg": ndcg_at}
"""Metric name -> per-case function of (ranks, k); the evaluator reports ``f"{name}@{k}"`` means."""


class MetricSums:
    """Sums of per-case metric values over all cases, divided once at the end (no mean of batch means).

    The one accumulator of evaluation, validation during training and candidate evaluation. Sums are float64,
    so averages over millions of cases do not drift.

    Example:
        >>> sums = MetricSums()
        >>> sums.add_ranks(torch.tensor([1.0, 3.0]), ks=[1])
        >>> sums.means(n_cases=2)
        {'hr@1': 0.5, 'mrr@1': 0.5, 'ndcg@1': 0.5}
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def add(self, key: str, per_case: torch.Tensor) -> None:
        """Add the per-case values of one batch to ``key``'s sum."""
        self.totals[key] = self.totals.get(key, 0.0) + float(per_case.double().sum())

    def add_ranks(self, ranks: torch.Tensor, ks: Sequence[int]) -> None:
        """Add ``hr@k``, ``mrr@k`` and ``ndcg@k`` of (B,) target ranks for every cutoff in ``ks``."""
        for k in ks:
            for name, per_case in RANK_METRICS.items():
                self.add(f"{name}@{k}", per_case(ranks, k))

    def add_category_hits(self, category_scores: torch.Tensor, target_categories: torch.Tensor) -> None:
        """Add ``cat_acc@1`` and ``cat_acc@5`` of (B, C) category scores against (B,) target categories."""
        for k in CATEGORY_KS:
            self.add(f"cat_acc@{k}", category_hits_at(category_scores, target_categories, k))

    def mean(self, key: str, n_cases: int) -> float:
        """``key``'s sum divided by ``n_cases`` (0 when nothing was added)."""
        return self.totals.get(key, 0.0) / max(n_cases, 1)

    def means(self, n_cases: int) -> dict[str, float]:
        """Every metric's mean over ``n_cases``."""
        return {key: self.mean(key, n_cases) for key in self.totals}
