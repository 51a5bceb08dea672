"""SR: sequential rules (Kamehkhosh, Jannach & Ludewig 2017; Ludewig & Jannach, UMUAI 2018).

A rule ``a -> b`` is counted each time ``b`` follows ``a`` within ``steps`` clicks of the same training
session, weighted by a function of the gap ``g`` (1 = directly after): ``div`` 1 / g (the default),
``linear`` max(0, 1 - 0.1 g), ``same`` 1, ``log`` 1 / log10(g + 1.7), ``quadratic`` 1 / g^2. A prefix is
scored by the rules of its last click: ``score(b) = sum of weights of a -> b``. With ``pruning = n > 0``
only the ``n`` strongest rules of each ``a`` are kept (ties: smaller item index first).

Defaults: ``steps=10, weighting="div", pruning=20`` (session-rec's ``baselines/sr.py``; its tuned
diginetica values are ``steps=20, weighting="quadratic"``). Deviation: session-rec's ``linear`` weight
turns negative for gaps past 10; here it is clipped at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._hyperparams import check_choice, check_positive_int
from hiersrec.models._item_to_item import last_item_scores
from hiersrec.models.base import FittedModel, check_is_fitted

GAP_WEIGHTS: dict[str, Callable[[int], float]] = {
    "div": lambda g: 1.0 / g,
    "linear": lambda g: max(0.0, 1.0 - 0.1 * g),
    "same": lambda g: 1.0,
    "log": lambda g: 1.0 / np.log10(g + 1.7),
    "quadratic": lambda g: 1.0 / g**2,
}
"""Weight of a rule occurrence whose consequent follows its antecedent ``g >= 1`` clicks later."""


class SequentialRules(FittedModel):
    """Rules from an item to the items that follow it within a few clicks, scored from the last click.

    Args:
        steps: largest gap (in clicks) between an item and a following item that forms a rule.
        weighting: gap weight, a key of `GAP_WEIGHTS`.
        pruning: rules kept per antecedent, strongest first (0: all).
    """

    name: ClassVar[str] = "sr"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "steps": (1, 2, 3, 5, 10, 15, 20, 30),
        "weighting": tuple(GAP_WEIGHTS),
        "pruning": (0, 10, 20, 50),
    }

    def __init__(self, steps: int = 10, weighting: str = "div", pruning: int = 20) -> None:
        self.steps = steps
        self.weighting = weighting
        self.pruning = pruning

    def fit(self, train: SessionData, catalog: ItemCatalog) -> SequentialRules:
        """Mine the weighted rules (one vectorised pass over the clicks per gap) and prune them."""
        check_positive_int(self, "steps", self.steps)
        check_choice(self, "weighting", self.weighting, GAP_WEIGHTS)
        if self.pruning != 0:
            check_positive_int(self, "pruning", self.pruning)
        n_columns = catalog.n_items + 1
        starts = train.session_starts()
        antecedents, consequents, weights = [], [], []
        for gap in range(1, self.steps + 1):
            same_session = starts[gap:] == starts[:-gap]
            antecedents.append(train.items[:-gap][same_session])
            consequents.append(train.items[gap:][same_session])
            weights.append(np.full(int(same_session.sum()), GAP_WEIGHTS[self.weighting](gap)))
        rules = sp.csr_matrix(
            (np.concatenate(weights), (np.concatenate(antecedents), np.concatenate(consequents))),
            shape=(n_columns, n_columns),
        )  # duplicates are summed: the weight of a rule over all its occurrences
        rules.eliminate_zeros()
        if self.pruning:
            rules = _strongest_per_row(rules, self.pruning)
        self.rules_ = rules.astype(np.float32)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 rule weights from each prefix's last click; column 0 = -inf."""
        check_is_fitted(self, "rules_")
        return last_item_scores(self.rules_, batch)


def _strongest_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    # Sort each row's entries by weight (descending; ties by column) and keep the first n.
    matrix.sort_indices()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(order.size) - matrix.indptr[rows[order]]
    keep = np.sort(order[rank < n])
    return sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)
