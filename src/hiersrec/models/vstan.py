"""VSTAN: STAN with V-SKNN's sequence-aware scoring and IDF (Ludewig, Latifi, Jannach; UMUAI 2021).

session-rec ``knn/vstan.py``. Neighbours, their similarities and item weights are STAN's
(`STAN.neighbourhood`: position decay ``lambda_spw``, recency ``lambda_snh``, item distance ``lambda_inh``);
each neighbour's contribution to item ``j`` is then further multiplied by

* ``exp(-(L - p*) / lambda_ipw)``, where ``p*`` is the position in the prefix (1 = oldest, L = latest) of
  the last click on an item the neighbour contains (V-SKNN's score decay, made exponential), and
* ``1 + lambda_idf * idf(j)`` with ``idf(j) = log(S / clicks(j))`` (V-SKNN's IDF boost; 0 = off).

Defaults: ``k=100, sample_size=5000, lambda_spw=1.02, lambda_snh=5, lambda_inh=2.05, lambda_ipw=1.02,
lambda_idf=5`` (session-rec's constructor; ``k`` from its documentation). session-rec's tuned diginetica
values (MRR@20): ``k=1500, sample_size=5000, lambda_spw=4.9, lambda_snh=40, lambda_inh=4.9,
lambda_ipw=1.225, lambda_idf=10``. session-rec's ``similarity`` option is not offered: its code computes
STAN's cosine whatever the option says.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._hyperparams import check_non_negative, check_positive
from hiersrec.models._session_index import PrefixQuery, dense_scores
from hiersrec.models.base import check_is_fitted
from hiersrec.models.stan import LAMBDA_GRID, STAN, exp_decay


class VSTAN(STAN):
    """STAN plus V-SKNN's recency decay of neighbour scores and IDF boost.

    Args:
        k: neighbours whose items are scored.
        sample_size: most recent candidate sessions kept per prefix (None: all).
        lambda_spw: position decay of prefix items in the similarity (clicks; None: off).
        lambda_snh: recency decay of neighbour sessions (days; None: off; needs training timestamps).
        lambda_inh: decay of a neighbour's items by their distance to its last shared click (clicks; None: off).
        lambda_ipw: decay of a neighbour's scores by how far back its last shared prefix click is (clicks; None: off).
        lambda_idf: strength of the IDF boost of rare items (0: off).
    """

    name: ClassVar[str] = "vstan"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        **STAN.SEARCH_SPACE,
        "lambda_ipw": LAMBDA_GRID,
        "lambda_idf": (0, 1, 2, 5, 10),
    }

    def __init__(
        self,
        k: int = 100,
        sample_size: int | None = 5000,
        lambda_spw: float | None = 1.02,
        lambda_snh: float | None = 5.0,
        lambda_inh: float | None = 2.05,
        lambda_ipw: float | None = 1.02,
        lambda_idf: float = 5.0,
    ) -> None:
        super().__init__(k, sample_size, lambda_spw, lambda_snh, lambda_inh)
        self.lambda_ipw = lambda_ipw
        self.lambda_idf = lambda_idf

    def fit(self, train: SessionData, catalog: ItemCatalog) -> VSTAN:
        """Index the training sessions and compute item IDF."""
        check_positive(self, "lambda_ipw", self.lambda_ipw, allow_none=True)
        check_non_negative(self, "lambda_idf", self.lambda_idf)
        super().fit(train, catalog)
        self.item_boost_ = 1.0 + self.lambda_idf * self.index_.idf()
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 VSTAN scores; column 0 = -inf."""
        check_is_fitted(self, "index_")
        query = PrefixQuery.from_batch(batch)
        hood = self.neighbourhood(query)
        recency = exp_decay(query.lengths[hood.rows] - hood.last_shared[hood.pair], self.lambda_ipw)
        values = hood.similarity[hood.pair] * hood.item_weight * recency * self.item_boost_[hood.items]
        return dense_scores(hood.rows, hood.items, values, query.n_rows, self.index_.n_columns)
