"""V-SKNN: vector multiplication session-based kNN (Ludewig & Jannach, UMUAI 2018; session-rec ``knn/vsknn.py``).

SKNN made sequence-aware in two places. For a prefix of ``L`` clicks, each distinct item ``i`` gets the
weight ``w(p_i, L)`` of the position ``p_i`` of its last click (1 = oldest, L = most recent):

1. candidates: as SKNN, the ``sample_size`` most recent training sessions sharing an item with the prefix;
2. similarity with a candidate's item set ``N``: ``sim = sum_{i in P & N} w(p_i, L) / |P|`` (session-rec's
   ``vec``); candidates with ``sim = 0`` are dropped and the ``k`` most similar kept;
3. ``score(i) = sum over neighbours N containing i of sim * d(step) * (1 + idf_weight * idf(i))`` where
   ``step`` counts clicks back from the end of the prefix to the most recent click whose item is in ``N``
   (1 = the last click) and ``idf(i) = log(S / clicks(i))``.

Position weights ``w(p, L)`` (``weighting``): ``same`` 1; ``div`` p / L; ``linear`` max(0, 1 - 0.1 (L - p));
``log`` 1 / log10(L - p + 1.7); ``quadratic`` (p / L)^2. Score decays ``d(step)`` (``weighting_score``):
``same`` 1; ``div`` 1 / step; ``linear`` max(0, 1 - 0.1 step); ``log`` 1 / log10(step + 1.7); ``quadratic``
1 / step^2.

Defaults: ``k=100, sample_size=1000, weighting="div", weighting_score="div", idf_weight=0`` (session-rec's
constructor defaults, ``k`` from its documentation). session-rec's tuned diginetica values are
``k=500, weighting="quadratic", weighting_score="div", idf_weighting=5``. Deviations from session-rec's code:
its ``linear`` weights are ``1 - 0.1 (L - p)`` only for ``p <= 10`` (else 0) and its ``linear`` decay turns
negative past 10 steps; here both are the clipped linear decay the paper describes. Current-session items
are always scored (session-rec's default ``remind=True``); the final division by the maximum is omitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._hyperparams import check_choice, check_non_negative, check_positive_int
from hiersrec.models._session_index import PrefixQuery, SessionIndex, dense_scores, top_k_mask
from hiersrec.models.base import FittedModel, check_is_fitted

POSITION_WEIGHTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "same": lambda p, n: np.ones(p.shape),
    "div": lambda p, n: p / n,
    "linear": lambda p, n: np.maximum(0.0, 1.0 - 0.1 * (n - p)),
    "log": lambda p, n: 1.0 / np.log10(n - p + 1.7),
    "quadratic": lambda p, n: (p / n) ** 2,
}
"""Weight of a prefix item from the position ``p`` of its last click in a prefix of ``n`` clicks."""

SCORE_DECAYS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "same": lambda s: np.ones(s.shape),
    "div": lambda s: 1.0 / s,
    "linear": lambda s: np.maximum(0.0, 1.0 - 0.1 * s),
    "log": lambda s: 1.0 / np.log10(s + 1.7),
    "quadratic": lambda s: 1.0 / s**2,
}
"""Decay of a neighbour's item scores by ``step`` (>= 1), the clicks back to the most recent shared click."""


class VSKNN(FittedModel):
    """Sequence-aware session kNN with position-weighted similarity and recency-decayed item scores.

    Args:
        k: neighbours whose items are scored.
        sample_size: most recent candidate sessions kept per prefix (None: all).
        weighting: position weight of prefix items in the similarity (a key of `POSITION_WEIGHTS`).
        weighting_score: decay of a neighbour's scores (a key of `SCORE_DECAYS`).
        idf_weight: strength of the IDF boost of rare items (0: off).
    """

    name: ClassVar[str] = "vsknn"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "k": (50, 100, 500, 1000, 1500),
        "sample_size": (500, 1000, 2500, 5000, 10000),
        "weighting": tuple(POSITION_WEIGHTS),
        "weighting_score": tuple(SCORE_DECAYS),
        "idf_weight": (0, 1, 2, 5, 10),
    }

    def __init__(
        self,
        k: int = 100,
        sample_size: int | None = 1000,
        weighting: str = "div",
        weighting_score: str = "div",
        idf_weight: float = 0.0,
    ) -> None:
        self.k = k
        self.sample_size = sample_size
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weight = idf_weight

    def fit(self, train: SessionData, catalog: ItemCatalog) -> VSKNN:
        """Index the training sessions and compute item IDF."""
        check_positive_int(self, "k", self.k)
        check_positive_int(self, "sample_size", self.sample_size, allow_none=True)
        check_choice(self, "weighting", self.weighting, POSITION_WEIGHTS)
        check_choice(self, "weighting_score", self.weighting_score, SCORE_DECAYS)
        check_non_negative(self, "idf_weight", self.idf_weight)
        self.index_ = SessionIndex.build(train, catalog.n_items)
        self.item_boost_ = 1.0 + self.idf_weight * self.index_.idf()
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 decayed, IDF-boosted similarities of the neighbours containing each item."""
        check_is_fitted(self, "index_")
        query = PrefixQuery.from_batch(batch)
        prefix_weight = POSITION_WEIGHTS[self.weighting](query.last_position, query.lengths[query.rows])
        candidates = self.index_.candidates(query, self.sample_size, weights=prefix_weight)
        rows, similarity = candidates.rows, candidates.weighted_shared / query.n_distinct()[candidates.rows]
        positive = np.flatnonzero(similarity > 0)  # session-rec drops candidates of similarity 0
        top = positive[top_k_mask(rows[positive], similarity[positive], self.k)]

        entries = self.index_.expand(candidates.sessions[top])
        entry_rows = rows[top][entries.pair]
        prefix_position = query.positions_of(entry_rows, entries.items)  # 0: item not in the prefix
        step = query.lengths[rows[top]] - np.maximum.reduceat(prefix_position, entries.starts) + 1
        neighbour_weight = similarity[top] * SCORE_DECAYS[self.weighting_score](step)
        values = neighbour_weight[entries.pair] * self.item_boost_[entries.items]
        return dense_scores(entry_rows, entries.items, values, query.n_rows, self.index_.n_columns)
