"""How HierSRec's category prediction reaches its item scores: the five category feeds in one place.

The session state ``h`` predicts the next category (logits ``l``, ``p = softmax(l)``); the feed decides
what the item head does with that prediction. Every caller asks this unit: the item query (`query`), the
training loss (`loss_terms`), the scores (`category_offsets` and ``normalises_within_category``, which
`hiersrec.models.base.item_query_scores` and the candidate index apply) and candidate support.

===============  ==========================================  ==============================================
feed             item query ``q``                            ``score(i)``
===============  ==========================================  ==============================================
``"concat"``     ``h + FFN(concat(h, W p))`` (the paper's)   ``q . v_i``
``"expected"``   ``h + FFN(concat(h, sum_c p_c E_cat[c]))``  ``q . v_i``
``"factorised"`` ``h``                                       ``log p_c(i) + q . v_i - logsumexp_{j in c(i)} q . v_j``
``"prior"``      ``h``                                       ``q . v_i + w log p_c(i)`` (``w`` learned)
``"none"``       ``h``                                       ``q . v_i`` (flat multi-task, or single-task)
===============  ==========================================  ==============================================

Each score is a per-category term added to an inner product (and, for "factorised", normalised within the
category), so whole-category candidate sets are ranked with exactly the full-ranking scores for every feed.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

CategoryFeedName = Literal["concat", "expected", "factorised", "prior", "none"]
CATEGORY_FEEDS: tuple[str, ...] = ("concat", "expected", "factorised", "prior", "none")
# The feeds whose item loss is a softmax within the target's category or with per-category offsets
# (`CategoryFeed.loss_terms`): it needs every item's score, so only the exact losses of ``train.loss`` train them.
EXACT_LOSS_FEEDS: tuple[str, ...] = ("factorised", "prior")


class CategoryFeed(nn.Module):
    """The category feed of `HierSRec` (see the module docstring for the five kinds).

    Args:
        kind: one of `CATEGORY_FEEDS`.
        n_categories: C, including padding.
        d_model: width of the session state.
        d_ff: hidden width of the feed's FFN ("concat", "expected").
        d_feed: width of the projected category distribution ("concat").
        d_category: width of the model's category embeddings (read by "expected", passed to `query`).
    """

    def __init__(
        self,
        kind: CategoryFeedName,
        n_categories: int,
        d_model: int,
        d_ff: int,
        d_feed: int,
        d_category: int,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.proj = nn.Linear(n_categories, d_feed) if kind == "concat" else None
        width = {"concat": d_feed, "expected": d_category}.get(kind, 0)
        self.ffn = (
            nn.Sequential(nn.Linear(d_model + width, d_ff), nn.GELU(), nn.Linear(d_ff, d_model)) if width else None
        )
        self.prior_weight = nn.Parameter(torch.ones(())) if kind == "prior" else None

    @property
    def normalises_within_category(self) -> bool:
        """True when item scores are log-probabilities within their category ("factorised")."""
        return self.kind == "factorised"

    def query(
        self,
        states: torch.Tensor,
        category_logits: torch.Tensor,
        dropout: float,
        category_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, D) item queries from (N, D) states and (N, C) category logits (PAD column -inf).

        ``category_embeddings`` (C, d_category) is the model's category table, needed by "expected".
        """
        if self.ffn is None:
            return states
        p_category = category_logits.softmax(dim=1)
        if self.proj is not None:
            z = self.proj(p_category)
        else:
            assert category_embeddings is not None, "the 'expected' feed reads the category embeddings"
            z = p_category @ category_embeddings
        # Residual: the head starts as the flat model and learns what the prediction adds (trains more stably).
        return states + F.dropout(self.ffn(torch.cat([states, z.to(states.dtype)], dim=1)), dropout)

    def category_offsets(self, category_logits: torch.Tensor) -> torch.Tensor | None:
        """(N, C) score added to every item of each category, or None ("concat", "expected", "none").

        The padding column is 0 (padding items are masked anyway); differentiable ("prior" learns ``w``).
        """
        if self.kind not in ("prior", "factorised"):
            return None
        log_probs = F.pad(category_logits[:, 1:].float().log_softmax(dim=1), (1, 0))
        return self.prior_weight * log_probs if self.kind == "prior" else log_probs

    def loss_terms(
        self, category_logits: torch.Tensor, target_categories: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the item loss's softmax needs: ``(target_groups, group_bias)``.

        "factorised" runs the softmax within the target's category (``-log P(i | c)``; the model adds the
        category loss ``-log P(c)`` to it); "prior" adds its offsets to the logits; the others need neither.
        """
        if self.kind == "factorised":
            return target_categories, None
        if self.kind == "prior":
            return None, self.category_offsets(category_logits)
        return None, None
