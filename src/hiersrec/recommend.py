"""Recommendations from raw item ids: ranking, exclusions, unknown items and fallbacks, written once for every model.

`Recommender` wraps any model with ``score(batch) -> (B, V)`` (HierSRec, a fitted baseline) together with its
vocabulary and catalogue. It is stateless: a recommendation is a pure function of the model and the session.

* Raw ids in, raw ids out. Unknown item ids are dropped and reported, never an error.
* A session with no known click gets an explicit, labelled fallback: the most popular items (``"popularity"``),
  or nothing (``"empty"``) when no item popularity was given.
* Sessions longer than the model's ``max_len`` keep their most recent clicks (as in training and evaluation).
* Scores are the model's own ``score`` (the evaluated scores), whatever the model; equal scores are ordered by
  ascending item index.
* A session scores the same alone or in a batch (up to float rounding in the last digits).
* With a candidate budget (models that `hiersrec.models.base.candidate_support` accepts: HierSRec, every
  category feed), only the items of the categories selected from the predicted category distribution
  (`hiersrec.retrieval.category.select_categories`), and by default every item of the session itself, are
  ranked, with the model's own scores: through `hiersrec.retrieval.index.CategoryIndex` for a model with an
  item query (`ItemQuery`), else (a fused model) by masking its full scores to the candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiersrec.artifact import load_artifact
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ConfigError, DataError
from hiersrec.eval.protocol import describe_model
from hiersrec.models.base import QueryRecommender, candidate_support
from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, select_categories
from hiersrec.retrieval.index import NEG_INF, CategoryIndex, top_k

logger = logging.getLogger(__name__)

DEFAULT_MAX_LEN = 50  # used when the model does not say (models with a config carry their own)
FALLBACK_POPULARITY = "popularity"
FALLBACK_EMPTY = "empty"


@dataclass(frozen=True)
class Recommendation:
    """The recommended items of one session, best first.

    Attributes:
        item_ids: raw item ids.
        scores: the model's score of each item (or its training click count for the popularity fallback).
        category_ids: raw category id of each item.
        unknown_items: raw ids of the session that the vocabulary does not know (dropped), first-seen order.
        fallback: None when the model scored the session; when no click was known, ``"popularity"`` (the most
            clicked training items) or ``"empty"`` (no popularity was available: no items).
    """

    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    category_ids: tuple[str, ...]
    unknown_items: tuple[str, ...] = ()
    fallback: str | None = None


class Recommender:
    """Top-k recommendations of a model for sessions of raw item ids.

    Args:
        model: any object with ``score(batch) -> (B, V)``; a model that
            `hiersrec.models.base.candidate_support` accepts (HierSRec) also supports candidate budgets.
        vocab: raw id <-> index maps of the model's training data.
        catalog: item categories of the same data.
        popularity: (V,) training click count of each item index, for sessions with no known click; without
            it such sessions get no items, labelled ``"empty"``.
        max_len: longest session given to the model (default: ``model.config.max_len``, else 50).
        batch_size: sessions scored at once by `recommend_batch`.
        metadata: what the service shows about the model (name, config, data fingerprint, metrics).

    Example:
        >>> recommender = Recommender.from_artifact("runs/hiersrec-dgn")  # doctest: +SKIP
        >>> rec = recommender.recommend(["1004", "2077", "unknown-id"], k=5)  # doctest: +SKIP
        >>> rec.item_ids, rec.unknown_items  # doctest: +SKIP
        (('331', '2078', ...), ('unknown-id',))
    """

    def __init__(
        self,
        model: Any,
        vocab: Vocab,
        catalog: ItemCatalog,
        popularity: np.ndarray | None = None,
        *,
        max_len: int | None = None,
        batch_size: int = 256,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not callable(getattr(model, "score", None)):
            name = describe_model(model).get("name", type(model).__name__)
            raise ConfigError(f"model {name!r} predicts categories only; it cannot recommend items")
        if vocab.n_items != catalog.n_items:
            raise DataError(f"vocabulary has {vocab.n_items} items but the catalogue {catalog.n_items}")
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.model = model
        self.vocab = vocab
        self.catalog = catalog
        self.max_len = max_len or getattr(getattr(model, "config", None), "max_len", None) or DEFAULT_MAX_LEN
        self.batch_size = batch_size
        self.metadata = {"model": describe_model(model), **(metadata or {})}
        self._item_category = torch.from_numpy(catalog.item_category)
        self._item_category_ids = vocab.decode_categories(catalog.item_category)  # raw category id of each item
        self._popularity = None if popularity is None else _popularity_scores(popularity, catalog.n_items)
        if popularity is None:
            logger.info("no item popularity given: sessions without a known click get no recommendation")
        self._no_candidates_reason = candidate_support(model)
        self._index = None
        self._category_sizes = torch.from_numpy(CategoryLayout.from_catalog(catalog).sizes)
        if self._no_candidates_reason is None and isinstance(model, QueryRecommender):
            with torch.inference_mode():
                self._index = CategoryIndex.from_catalog(model.item_output_embeddings().detach().float(), catalog)

    @classmethod
    def from_artifact(cls, run_dir: str | Path, **kwargs: Any) -> Recommender:
        """Load a run directory of any model (`hiersrec.artifact.load_artifact`) once, ready to recommend."""
        artifact = load_artifact(Path(run_dir))
        config = artifact.config.to_dict()
        metadata = {"run": str(run_dir), "config": config, "meta": artifact.meta, "metrics": artifact.metrics}
        popularity = artifact.item_popularity  # training click counts (None for runs saved without them)
        return cls(artifact.model, artifact.vocab, artifact.catalog, popularity, metadata=metadata, **kwargs)

    @property
    def supports_candidates(self) -> bool:
        """True when the model can rank category candidates only (the model says so: `candidate_support`)."""
        return self._no_candidates_reason is None

    def recommend(
        self,
        session: Sequence[object],
        k: int = 20,
        *,
        exclude: Sequence[object] = (),
        exclude_seen: bool = False,
        categories: Sequence[object] | None = None,
        candidate_budget: str | float | CandidateBudget | None = None,
    ) -> Recommendation:
        """The top-``k`` items for one session of raw item ids, oldest click first.

        Args:
            session: raw item ids clicked so far, oldest first (unknown ids are dropped and reported).
            k: items wanted; fewer come back when fewer are eligible (e.g. ``k`` beyond the catalogue).
            exclude: raw item ids never to recommend.
            exclude_seen: also exclude the session's own items.
            categories: raw category ids to restrict the recommendations to.
            candidate_budget: rank only the items of the predicted categories (``"4%"``, ``"4%:probability"``,
                ``"category:5"``: `CandidateBudget.parse`); None ranks every item.

        Raises:
            DataError: ``k`` < 1, or an unknown category id in ``categories``.
            NotImplementedError: a candidate budget for a model without a category head.
        """
        return self.recommend_batch(
            [session],
            k,
            exclude=[exclude],
            exclude_seen=exclude_seen,
            categories=categories,
            candidate_budget=candidate_budget,
        )[0]

    def recommend_batch(
        self,
        sessions: Sequence[Sequence[object]],
        k: int = 20,
        *,
        exclude: Sequence[Sequence[object]] | None = None,
        exclude_seen: bool = False,
        categories: Sequence[object] | None = None,
        candidate_budget: str | float | CandidateBudget | None = None,
    ) -> list[Recommendation]:
        """`recommend` for many sessions at once (scored ``batch_size`` at a time); same results as one by one.

        ``exclude``, when given, holds one list of raw ids per session; the other options apply to all.
        """
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        if exclude is not None and len(exclude) != len(sessions):
            raise DataError(f"exclude has {len(exclude)} lists for {len(sessions)} sessions")
        budget = None if candidate_budget is None else CandidateBudget.parse(candidate_budget)
        if budget is not None and not self.supports_candidates:
            raise NotImplementedError(f"no candidate budget for this model: {self._no_candidates_reason}")
        allowed = None if categories is None else self._allowed_categories(categories)
        encoded = [self._encode(session) for session in sessions]
        excluded = [
            self.vocab.encode_items(list(exclude[row]) if exclude is not None else []) for row in range(len(sessions))
        ]
        if exclude_seen:
            excluded = [np.concatenate([ex, known]) for ex, (known, _) in zip(excluded, encoded, strict=True)]
        results: list[Recommendation | None] = [None] * len(sessions)
        scored = [row for row, (known, _) in enumerate(encoded) if known.size]
        for start in range(0, len(scored), self.batch_size):
            rows = scored[start : start + self.batch_size]
            ids, values = self._rank([encoded[r][0] for r in rows], [excluded[r] for r in rows], k, allowed, budget)
            for row, row_ids, row_values in zip(rows, ids.tolist(), values.tolist(), strict=True):
                results[row] = self._result(row_ids, row_values, encoded[row][1], None)
        fallback_rows = [row for row, (known, _) in enumerate(encoded) if not known.size]
        label = FALLBACK_EMPTY if self._popularity is None else FALLBACK_POPULARITY
        if fallback_rows:
            ids, values = self._rank_popular([excluded[r] for r in fallback_rows], k, allowed)
            for row, row_ids, row_values in zip(fallback_rows, ids.tolist(), values.tolist(), strict=True):
                results[row] = self._result(row_ids, row_values, encoded[row][1], label)
        return results  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """Model name, configuration, data fingerprint and metrics (what ``GET /model`` shows)."""
        return dict(self.metadata)

    def _encode(self, session: Sequence[object]) -> tuple[np.ndarray, tuple[str, ...]]:
        raw = [str(item) for item in session]
        idx = self.vocab.encode_items(raw)
        unknown = tuple(dict.fromkeys(r for r, i in zip(raw, idx, strict=True) if i == 0))
        if unknown:
            logger.debug("dropped %d unknown item ids", len(unknown))
        return idx[idx > 0], unknown

    def _allowed_categories(self, categories: Sequence[object]) -> torch.Tensor:
        raw = [str(c) for c in categories]
        idx = self.vocab.encode_categories(raw)
        unknown = [r for r, i in zip(raw, idx, strict=True) if i == 0]
        if unknown:
            raise DataError(f"categories: unknown category ids {unknown[:5]} ({len(unknown)} in all)")
        allowed = torch.zeros(self.catalog.n_categories + 1, dtype=torch.bool)
        allowed[torch.from_numpy(idx)] = True
        return allowed

    @torch.inference_mode()
    def _rank(self, sessions, excluded, k, allowed, budget):
        items, lengths = left_pad(sessions, self.max_len)
        batch = make_batch(items, lengths, self.catalog)
        exclude = _padded(excluded)
        if budget is None:
            return top_k(self._mask(self.model.score(batch).float(), exclude, allowed), k)
        include = None
        if budget.session_items:  # every click of the session joins the candidates: a repeat is never lost
            include = _padded(sessions)
            if allowed is not None:
                include = include * allowed[self._item_category[include]]
        if self._index is None:  # no item query: the full scores, masked to the candidates
            selected = select_categories(self.model.score_categories(batch), self._category_sizes, budget, allowed)
            scores = self._mask(self.model.score(batch).float(), exclude, allowed)
            candidate = selected.gather(1, self._item_category.expand(scores.shape))
            if include is not None:
                candidate.scatter_(1, include, True)
                candidate[:, 0] = False
            return top_k(scores.masked_fill_(~candidate, NEG_INF), k)
        query = self.model.query(batch)
        selected = select_categories(query.category_logits, self._index.sizes, budget, allowed)
        return self._index.search(query, k, selected=selected, exclude=exclude, include=include)

    def _rank_popular(self, excluded, k, allowed):
        if self._popularity is None:
            return torch.zeros((len(excluded), 0), dtype=torch.int64), torch.zeros((len(excluded), 0))
        scores = self._popularity.expand(len(excluded), -1).clone()
        return top_k(self._mask(scores, _padded(excluded), allowed), k)

    def _mask(self, scores: torch.Tensor, exclude: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        scores[:, 0] = NEG_INF
        scores.scatter_(1, exclude, NEG_INF)
        if allowed is not None:
            scores.masked_fill_(~allowed[self._item_category], NEG_INF)
        return scores

    def _result(self, ids: list[int], values: list[float], unknown: tuple[str, ...], fallback: str | None):
        # Plain Python on one row's k entries: per-row tensor indexing cost more than the row's whole ranking.
        keep = [j for j, value in enumerate(values) if value > NEG_INF]
        ids = [ids[j] for j in keep]
        return Recommendation(
            item_ids=tuple(self.vocab.decode_items(ids)),
            scores=tuple(values[j] for j in keep),
            category_ids=tuple(self._item_category_ids[i] for i in ids),
            unknown_items=unknown,
            fallback=fallback,
        )


def _popularity_scores(popularity: np.ndarray, n_items: int) -> torch.Tensor:
    popularity = np.asarray(popularity, dtype=np.float32)
    if popularity.shape != (n_items + 1,):
        raise DataError(f"popularity needs one value per item index ({n_items + 1}), got shape {popularity.shape}")
    return torch.from_numpy(popularity).unsqueeze(0)


def _padded(lists: list[np.ndarray]) -> torch.Tensor:
    # (B, E) int64 item indices padded with 0 (padding is never recommended, so it excludes nothing).
    width = max(1, max((a.size for a in lists), default=0))
    out = np.zeros((len(lists), width), dtype=np.int64)
    for row, values in enumerate(lists):
        out[row, : values.size] = values
    return torch.from_numpy(out)
