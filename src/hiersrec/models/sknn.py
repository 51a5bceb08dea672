"""SKNN: session-based k-nearest neighbours (Jannach & Ludewig, RecSys 2017; Ludewig & Jannach, UMUAI 2018).

For a prefix with distinct item set ``P``:

1. candidates: the training sessions that contain an item of ``P``; of these only the ``sample_size``
   most recent are kept (session-rec's ``sampling="recent"``, by the time of a session's last click);
2. similarity of ``P`` with a candidate's item set ``N`` (binary vectors):
   ``cosine = |P & N| / sqrt(|P| |N|)`` or ``jaccard = |P & N| / |P | N|``;
3. the ``k`` most similar candidates are the neighbours;
4. ``score(i) = sum of sim(P, N)`` over the neighbours ``N`` that contain ``i``.

Defaults: ``k=100, sample_size=500, similarity="cosine"`` (the values of session-rec's documentation
and of its diginetica baseline configuration). Deviations from session-rec's ``knn/sknn.py``: its cosine
computes ``|P & N| / sqrt(|P|) * sqrt(|N|)`` (a precedence slip), here it is the cosine; ties in similarity
go to the more recent session instead of set order; the final division by the maximum score is omitted
(it does not change a ranking).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._hyperparams import check_choice, check_positive_int
from hiersrec.models._session_index import PrefixQuery, SessionIndex, dense_scores, top_k_mask
from hiersrec.models.base import FittedModel, check_is_fitted

SIMILARITIES = ("cosine", "jaccard")


class SKNN(FittedModel):
    """Session-based kNN over binary item sets.

    Args:
        k: neighbours whose items are scored.
        sample_size: most recent candidate sessions kept per prefix (None: all).
        similarity: ``"cosine"`` or ``"jaccard"``.
    """

    name: ClassVar[str] = "sknn"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "k": (50, 100, 500, 1000, 1500),
        "sample_size": (500, 1000, 2500, 5000, 10000),
        "similarity": SIMILARITIES,
    }

    def __init__(self, k: int = 100, sample_size: int | None = 500, similarity: str = "cosine") -> None:
        self.k = k
        self.sample_size = sample_size
        self.similarity = similarity

    def fit(self, train: SessionData, catalog: ItemCatalog) -> SKNN:
        """Index the training sessions."""
        check_positive_int(self, "k", self.k)
        check_positive_int(self, "sample_size", self.sample_size, allow_none=True)
        check_choice(self, "similarity", self.similarity, SIMILARITIES)
        self.index_ = SessionIndex.build(train, catalog.n_items)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 summed similarities of the neighbours containing each item; column 0 = -inf."""
        check_is_fitted(self, "index_")
        query = PrefixQuery.from_batch(batch)
        candidates = self.index_.candidates(query, self.sample_size)
        rows, sessions, n_shared = candidates.rows, candidates.sessions, candidates.n_shared
        prefix_size = query.n_distinct()[rows]
        session_size = self.index_.session_sizes(sessions)
        if self.similarity == "cosine":
            similarity = n_shared / np.sqrt(prefix_size * session_size)
        else:
            similarity = n_shared / (prefix_size + session_size - n_shared)
        top = np.flatnonzero(top_k_mask(rows, similarity, self.k))
        entries = self.index_.expand(sessions[top])
        return dense_scores(
            rows[top][entries.pair], entries.items, similarity[top][entries.pair], query.n_rows, self.index_.n_columns
        )
