"""Item-kNN: items scored by their co-occurrence similarity with the last clicked item.

The session-based item-kNN of Hidasi et al. (ICLR 2016) and session-rec's ``knn/iknn.py``: with
``supp(i)`` the number of training sessions containing ``i`` and ``co(i, j)`` the number containing both,
``sim(i, j) = co(i, j) / ((supp(i) + lmbd)^alpha (supp(j) + lmbd)^(1 - alpha))`` for ``j != i``;
``alpha = 0.5, lmbd = 0`` is the cosine of the binary item columns, ``lmbd`` shrinks the similarity of rare
items. A prefix is scored by the row of its last click. The item itself gets 0 (as in session-rec).

Defaults: ``alpha=0.5, lmbd=20`` (session-rec's and the GRU4Rec paper's). Deviations: supports and
co-occurrences count sessions, not clicks (session-rec counts repeated clicks again), and all similarities
are kept (session-rec keeps the 100 largest per item, which does not change the top 100).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError
from hiersrec.models._hyperparams import check_non_negative
from hiersrec.models._item_to_item import last_item_scores
from hiersrec.models.base import FittedModel, check_is_fitted


class ItemKNN(FittedModel):
    """Co-occurrence similarity of the last clicked item with every other item.

    Args:
        alpha: balance of the two supports in the normaliser (0.5: cosine; 1: confidence ``co / supp(i)``).
        lmbd: shrinkage added to both supports.
    """

    name: ClassVar[str] = "itemknn"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "alpha": (0.25, 0.5, 0.75, 1.0),
        "lmbd": (0, 5, 20, 50, 100),
    }

    def __init__(self, alpha: float = 0.5, lmbd: float = 20.0) -> None:
        self.alpha = alpha
        self.lmbd = lmbd

    def fit(self, train: SessionData, catalog: ItemCatalog) -> ItemKNN:
        """Compute all item-item similarities from the binary session-item matrix."""
        check_non_negative(self, "lmbd", self.lmbd)
        check_non_negative(self, "alpha", self.alpha)
        if self.alpha > 1:
            raise ConfigError(f"ItemKNN: alpha must be in [0, 1], got {self.alpha!r}")
        n_columns = catalog.n_items + 1
        rows = np.repeat(np.arange(train.n_sessions), train.lengths)
        sessions = sp.csr_matrix((np.ones(train.n_clicks), (rows, train.items)), shape=(train.n_sessions, n_columns))
        sessions.data[:] = 1.0  # duplicates were summed: keep one per (session, item)
        co_occurrence = (sessions.T @ sessions).tocsr()
        support = co_occurrence.diagonal()
        co_occurrence = (co_occurrence - sp.diags(support)).tocsr()  # an item is not its own neighbour
        co_occurrence.eliminate_zeros()
        shrunk = support + self.lmbd
        safe = np.where(shrunk > 0, shrunk, 1.0)  # items never clicked have empty rows and columns
        left, right = sp.diags(safe**-self.alpha), sp.diags(safe ** (self.alpha - 1.0))
        self.similarity_ = (left @ co_occurrence @ right).tocsr().astype(np.float32)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 similarities of every item to each prefix's last click; column 0 = -inf."""
        check_is_fitted(self, "similarity_")
        return last_item_scores(self.similarity_, batch)
