"""STAN: sequence and time aware neighbourhood (Garg, Gupta, Kaggal, Sarma; SIGIR 2019; session-rec ``knn/stan.py``).

For a prefix of ``L`` clicks whose distinct item ``i`` was last clicked at position ``p_i`` (1 = oldest):

1. candidates: the ``sample_size`` most recent training sessions sharing an item with the prefix;
2. similarity with a candidate of distinct item set ``N`` (cosine of the position-weighted prefix vector
   and the binary candidate vector), times the candidate's recency:
   ``sim = sum_{i in P & N} w_i / (sqrt(sum_{i in P} w_i^2) sqrt(|N|)) * exp(-age / lambda_snh)`` with
   ``w_i = exp(-(L - p_i) / lambda_spw)``; the ``k`` most similar candidates are the neighbours;
3. ``score(j) = sum over neighbours containing j of sim * exp(-|q_j - q*| / lambda_inh)`` where ``q_j`` is
   the position of ``j``'s last click in the neighbour and ``q*`` the position of the neighbour's last click
   on an item of the prefix.

The age is measured in days from the most recent candidate of the prefix: the prefixes carry no click
time, and any reference time multiplies all of a prefix's similarities by the same factor, so rankings
equal those with the true current time (and nothing underflows). Without training timestamps (the SR-GNN
files have none) the recency factor is left out and ``lambda_snh`` has no effect. A ``lambda_*`` of None
switches its factor off.

Defaults: ``k=100, sample_size=5000, lambda_spw=1.02, lambda_snh=5, lambda_inh=2.05`` (session-rec's
constructor; ``k`` from its documentation). session-rec's tuned diginetica values (MRR@20): ``k=500,
sample_size=10000, lambda_spw=1.225, lambda_snh=20, lambda_inh=4.9``. Ties in similarity go to the more
recent session (session-rec: set order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._hyperparams import check_positive, check_positive_int
from hiersrec.models._session_index import PrefixQuery, SessionIndex, dense_scores, top_k_mask
from hiersrec.models.base import FittedModel, check_is_fitted

SECONDS_PER_DAY = 86_400.0
LAMBDA_GRID = (1e-5, 0.6125, 1.225, 2.45, 4.9, 9.8)
"""session-rec's search grid for the position decays (the same for lambda_spw, lambda_inh, lambda_ipw)."""


def exp_decay(distance: np.ndarray, scale: float | None) -> np.ndarray:
    """``exp(-distance / scale)``, or ones when ``scale`` is None (the factor switched off)."""
    if scale is None:
        return np.ones(np.shape(distance))
    return np.exp(-np.asarray(distance, dtype=np.float64) / scale)


@dataclass(frozen=True)
class Neighbourhood:
    """The neighbours of a batch of prefixes, and one entry per (neighbour, distinct item) to score.

    Attributes:
        similarity: (N,) float64 similarity of each neighbour (STAN step 2).
        last_shared: (N,) int64 position in the prefix of the last click on an item the neighbour contains.
        pair: (E,) int64 neighbour of each entry.
        rows: (E,) int64 prefix row of each entry.
        items: (E,) int64 item of each entry.
        item_weight: (E,) float64 ``exp(-|q_j - q*| / lambda_inh)`` (STAN step 3).
    """

    similarity: np.ndarray
    last_shared: np.ndarray
    pair: np.ndarray
    rows: np.ndarray
    items: np.ndarray
    item_weight: np.ndarray


class STAN(FittedModel):
    """Sequence- and time-aware session kNN.

    Args:
        k: neighbours whose items are scored.
        sample_size: most recent candidate sessions kept per prefix (None: all).
        lambda_spw: position decay of prefix items in the similarity (clicks; None: off).
        lambda_snh: recency decay of neighbour sessions (days; None: off; needs training timestamps).
        lambda_inh: decay of a neighbour's items by their distance to its last shared click (clicks; None: off).
    """

    name: ClassVar[str] = "stan"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "k": (100, 200, 500, 1000, 1500, 2000),
        "sample_size": (1000, 2500, 5000, 10000),
        "lambda_spw": LAMBDA_GRID,
        "lambda_snh": (1e-5, 2.5, 5, 10, 20, 40, 80, 100),
        "lambda_inh": LAMBDA_GRID,
    }

    def __init__(
        self,
        k: int = 100,
        sample_size: int | None = 5000,
        lambda_spw: float | None = 1.02,
        lambda_snh: float | None = 5.0,
        lambda_inh: float | None = 2.05,
    ) -> None:
        self.k = k
        self.sample_size = sample_size
        self.lambda_spw = lambda_spw
        self.lambda_snh = lambda_snh
        self.lambda_inh = lambda_inh

    def fit(self, train: SessionData, catalog: ItemCatalog) -> STAN:
        """Index the training sessions."""
        check_positive_int(self, "k", self.k)
        check_positive_int(self, "sample_size", self.sample_size, allow_none=True)
        for name in ("lambda_spw", "lambda_snh", "lambda_inh"):
            check_positive(self, name, getattr(self, name), allow_none=True)
        self.index_ = SessionIndex.build(train, catalog.n_items)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 STAN scores; column 0 = -inf."""
        check_is_fitted(self, "index_")
        query = PrefixQuery.from_batch(batch)
        hood = self.neighbourhood(query)
        values = hood.similarity[hood.pair] * hood.item_weight
        return dense_scores(hood.rows, hood.items, values, query.n_rows, self.index_.n_columns)

    def neighbourhood(self, query: PrefixQuery) -> Neighbourhood:
        """STAN's steps 1-3 for a batch: candidates, similarities, the ``k`` neighbours and their item weights."""
        index = self.index_
        prefix_weight = exp_decay(query.lengths[query.rows] - query.last_position, self.lambda_spw)
        candidates = index.candidates(query, self.sample_size, weights=prefix_weight)
        rows, sessions = candidates.rows, candidates.sessions
        prefix_norm = np.sqrt(np.bincount(query.rows, weights=prefix_weight**2, minlength=query.n_rows))
        similarity = candidates.weighted_shared / (prefix_norm[rows] * np.sqrt(index.session_sizes(sessions)))
        if self.lambda_snh is not None and index.session_time is not None and rows.size:
            # Rows ascend, sessions ascend within a row and session times never decrease with the session index:
            # the last candidate of each row is its most recent one.
            row_last = np.flatnonzero(np.append(rows[1:] != rows[:-1], True))
            reference = np.zeros(query.n_rows)
            reference[rows[row_last]] = index.session_time[sessions[row_last]]
            age_days = (reference[rows] - index.session_time[sessions]) / SECONDS_PER_DAY
            similarity = similarity * exp_decay(age_days, self.lambda_snh)
        top = np.flatnonzero(top_k_mask(rows, similarity, self.k))

        entries = index.expand(sessions[top])
        entry_rows = rows[top][entries.pair]
        prefix_position = query.positions_of(entry_rows, entries.items)  # 0: item not in the prefix
        shared_position = np.where(prefix_position > 0, entries.positions, 0)
        q_star = np.maximum.reduceat(shared_position, entries.starts)  # the neighbour's last click on a prefix item
        distance = np.abs(entries.positions - q_star[entries.pair])
        return Neighbourhood(
            similarity=similarity[top],
            last_shared=np.maximum.reduceat(prefix_position, entries.starts),
            pair=entries.pair,
            rows=entry_rows,
            items=entries.items,
            item_weight=exp_decay(distance, self.lambda_inh),
        )
