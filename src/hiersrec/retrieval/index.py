"""Inner-product search over item embeddings: the exact reference and the category-candidate index.

Both indexes answer ``search(queries, k, ...) -> (item_idx, scores)``, each (B, k') with
``k' = min(k, number of items)``, sorted by score with ties broken by ascending ``item_idx``. Rows with fewer
than ``k'`` eligible items are padded with item 0 (padding) and score ``-inf``; callers drop those.
`hiersrec.retrieval.faiss_index.FaissIndex` answers the same call with an approximate FAISS index.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError
from hiersrec.models.base import ItemQuery, category_adjusted
from hiersrec.retrieval.category import CategoryLayout
from hiersrec.retrieval.survivors import (
    GROUP,
    bf16_error_bound,
    flat_rows,
    group_maxima,
    kth_largest,
    kth_largest_per_row,
)

NEG_INF = float("-inf")
Precision = Literal["fp32", "bf16"]
# Fixed cost of scoring one category block in a batch (Python and kernel launch overhead), in multiply-adds, as
# calibrated on the 2-core reference machine. Only used to choose between two strategies with equal results.
PER_CATEGORY_COST = 1_000_000
# `top_columns` narrows rows of at least PREFILTER_MIN_BLOCKS_PER_K * k blocks of PREFILTER_BLOCK columns to their
# best blocks first: a pass of block maxima costs less than torch.topk over the whole row (the speed-up at 43k
# items is in commit c3475f1; benchmarks/results/scale-2026-11-29.md has the candidate search at scale).
PREFILTER_BLOCK = 64
PREFILTER_MIN_BLOCKS_PER_K = 4


def top_k(scores: torch.Tensor, k: int, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best entries of each row, by score descending, ties broken by ascending id.

    ``torch.topk`` alone picks arbitrarily among equal scores at the cut; rows where a tie straddles the
    cut are re-ranked with a stable sort, so the result never depends on kernel tie-breaking.

    Args:
        scores: (B, N) float scores.
        k: entries wanted (capped at N).
        ids: (B, N) or (N,) int64 id of each column; default the column index.

    Returns:
        (ids (B, k'), scores (B, k')) with ``k' = min(k, N)``; ``-inf`` entries are kept.

    Example:
        >>> top_k(torch.tensor([[0.5, 0.9, 0.5, 0.1]]), 2)
        (tensor([[1, 0]]), tensor([[0.9000, 0.5000]]))
    """
    n_rows, n_columns = scores.shape
    if ids is None:
        ids = torch.arange(n_columns)
    ids = ids.expand(n_rows, n_columns)
    columns = top_columns(scores, k, ids)
    top_ids, values = ids.gather(1, columns), scores.gather(1, columns)
    # Order equal scores inside the top k by id: sort by id, then stably by score.
    by_id = torch.argsort(top_ids, dim=1, stable=True)
    top_ids, values = top_ids.gather(1, by_id), values.gather(1, by_id)
    by_score = torch.argsort(values, dim=1, descending=True, stable=True)
    return top_ids.gather(1, by_score), values.gather(1, by_score)


def top_columns(scores: torch.Tensor, k: int, ids: torch.Tensor) -> torch.Tensor:
    """(B, min(k, N)) columns of the ``k`` best entries of each row, in no particular order.

    The set is the same as `top_k`'s: among equal scores at the cut, the lowest ``ids`` ((B, N) or (N,)) are kept.
    Wide rows are first narrowed to their best blocks of columns (`_top_columns_by_blocks`), which is exact.
    """
    n_rows, n_columns = scores.shape
    ids = ids.expand(n_rows, n_columns)
    if k >= n_columns:
        return torch.arange(n_columns).expand(n_rows, n_columns)
    if n_columns >= PREFILTER_MIN_BLOCKS_PER_K * k * PREFILTER_BLOCK and scores.is_contiguous():
        return _top_columns_by_blocks(scores, k, ids)
    return _top_columns_exact(scores, k, ids)


def _top_columns_by_blocks(scores: torch.Tensor, k: int, ids: torch.Tensor) -> torch.Tensor:
    # A row's k best entries lie in its k blocks with the highest maxima: any other block has k blocks above it,
    # each holding an entry above all of its own. So rank only those blocks' columns (plus the ragged tail),
    # then check: when the k-th best candidate scores strictly above every other block's maximum, no entry
    # outside ties with or beats it, and the answer is exact; rows that fail the check (ties at the cut with
    # the outside, e.g. rows of -inf) are ranked over all their columns.
    n_rows, n_columns = scores.shape
    n_blocks = n_columns // PREFILTER_BLOCK
    blocked = scores.as_strided((n_rows, n_blocks, PREFILTER_BLOCK), (scores.stride(0), PREFILTER_BLOCK, 1))
    block_max, best_blocks = torch.topk(blocked.amax(dim=2), k + 1, dim=1)  # (B, k + 1)
    within = torch.arange(PREFILTER_BLOCK)
    columns = (best_blocks[:, :k, None] * PREFILTER_BLOCK + within).reshape(n_rows, -1)  # (B, k * BLOCK)
    tail = torch.arange(n_blocks * PREFILTER_BLOCK, n_columns).expand(n_rows, -1)
    columns = torch.cat([columns, tail], dim=1)
    candidate_scores = scores.gather(1, columns)
    chosen = columns.gather(1, _top_columns_exact(candidate_scores, k, ids.gather(1, columns)))
    kth_best = scores.gather(1, chosen).amin(dim=1)
    undecided = ~(kth_best > block_max[:, k])
    if undecided.any():
        rows = undecided.nonzero().squeeze(1)
        chosen[rows] = _top_columns_exact(scores[rows], k, ids[rows])
    return chosen


def _top_columns_exact(scores: torch.Tensor, k: int, ids: torch.Tensor) -> torch.Tensor:
    # `top_columns` over every column (k < N).
    values, columns = torch.topk(scores, k + 1, dim=1)
    straddling = values[:, k - 1] == values[:, k]  # a tie at the cut: more entries deserve the last place
    columns = columns[:, :k]
    if straddling.any():
        rows = straddling.nonzero().squeeze(1)
        by_id = torch.argsort(ids[rows], dim=1, stable=True)
        best = torch.argsort(scores[rows].gather(1, by_id), dim=1, descending=True, stable=True)[:, :k]
        columns[rows] = by_id.gather(1, best)
    return columns


def mask_excluded(item_idx: torch.Tensor, scores: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """``scores`` with ``-inf`` wherever ``item_idx`` (B, N) is one of the row's ``exclude`` (B, E) items.

    ``exclude`` is padded with 0, which never matches: padding is not a result.
    """
    if exclude is None or item_idx.numel() == 0 or not (exclude > 0).any():
        return scores
    # Offset each row's ids by row * stride so that one isin call matches rows separately.
    stride = int(max(item_idx.max(), exclude.max())) + 1
    row_offset = torch.arange(item_idx.shape[0]).unsqueeze(1) * stride
    hit = torch.isin(item_idx.long() + row_offset, (exclude + row_offset)[exclude > 0])
    return scores.masked_fill(hit, NEG_INF)


class ExactIndex:
    """Brute force: score every item (``queries @ E.T``) and keep the top ``k``; the reference for the others.

    With ``precision="bf16"`` every item is scored with a bf16 copy of the matrix (AMX / tensor-core products)
    and only the items whose bf16 score leaves them a chance of the top ``k`` are re-scored in fp32
    (`hiersrec.retrieval.survivors`): the same answer as fp32, up to fp32 rounding.

    Example:
        >>> index = ExactIndex(torch.eye(3))  # item 0 is padding
        >>> index.search(torch.tensor([[0.0, 0.2, 0.9]]), k=5)[0].tolist()
        [[2, 1]]
    """

    def __init__(self, item_embeddings: torch.Tensor, precision: Precision = "fp32") -> None:
        """Index the (V, D) item output embeddings (row 0 is padding and never returned)."""
        self.item_embeddings = item_embeddings.detach().float().contiguous()
        self._low, self._max_norm = _low_precision_copy(self.item_embeddings, precision)

    @property
    def n_items(self) -> int:
        """Number of real items."""
        return self.item_embeddings.shape[0] - 1

    def search(
        self, queries: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items of each (B, D) query, without the (B, E) ``exclude`` item indices (0-padded)."""
        if self._low is not None:
            return self._search_low_precision(queries.float(), k, exclude)
        scores = queries.float() @ self.item_embeddings.T  # (B, V)
        scores[:, 0] = NEG_INF
        if exclude is not None and exclude.numel():
            scores.scatter_(1, exclude, NEG_INF)
        return _trim(*top_k(scores, k), k, self.n_items)

    def _search_low_precision(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None):
        # Full-size passes are the product and its group maxima only (bf16 element-wise kernels are slow on CPU):
        # the threshold comes from the maxima, then only the groups whose maximum reaches it are read again.
        approximate = queries.bfloat16() @ self._low.T  # (B, V) bf16
        approximate[:, 0] = NEG_INF
        if exclude is not None and exclude.numel():
            approximate.scatter_(1, exclude, NEG_INF)
        maxima = group_maxima(approximate).float()  # (B, G)
        threshold = kth_largest_per_row(maxima, min(k, self.n_items))
        # Padding and excluded items (-inf) never survive, whatever the threshold.
        threshold = (threshold - 2 * bf16_error_bound(queries, self._max_norm)).clamp_min(torch.finfo().min)
        rows, groups = (maxima >= threshold[:, None]).nonzero(as_tuple=True)
        columns = groups[:, None] * GROUP + torch.arange(GROUP)  # (S, GROUP) the surviving groups' columns
        inside = columns < approximate.shape[1]
        columns = columns.clamp_max(approximate.shape[1] - 1)
        survive = inside & (approximate[rows[:, None], columns].float() >= threshold[rows, None])
        rows, columns = rows[:, None].expand_as(columns)[survive], columns[survive]
        exact = (self.item_embeddings[columns] * queries[rows]).sum(dim=1)
        ids, scores = flat_rows([rows], [columns], [exact], queries.shape[0])
        return _trim(*top_k(scores, k, ids), k, self.n_items)


class CategoryIndex:
    """Exact scores of the items of chosen categories only, read as contiguous slices of the item matrix.

    The queries are plain (B, D) vectors (scores are inner products), or a model's `ItemQuery`, whose
    per-category terms (and within-category normalisation) are applied to each chosen category as a whole:
    the candidates get exactly their full-ranking scores, for every HierSRec category feed.

    The item matrix is permuted once (`CategoryLayout`) so that each category is a contiguous block. A single
    query reads runs of adjacent chosen categories as one slice each and ranks all its candidates. A batch is
    scored category by category: a chosen category's block is read once and multiplied with the queries of
    every row that chose it; each row's threshold from the blocks' group maxima keeps the few entries that
    can still be in its top ``k`` (`hiersrec.retrieval.survivors`), and only those are ranked.

    Example:
        >>> index = CategoryIndex.from_catalog(torch.randn(38, 16), catalog)  # doctest: +SKIP
        >>> chosen = select_categories(category_scores, index.sizes, CandidateBudget(0.04))  # doctest: +SKIP
        >>> item_idx, scores = index.search(queries, 20, selected=chosen)  # doctest: +SKIP
    """

    def __init__(self, item_embeddings: torch.Tensor, layout: CategoryLayout) -> None:
        """Index (V, D) item output embeddings laid out by ``layout`` (row 0, padding, is left out)."""
        assert item_embeddings.shape[0] == layout.n_items + 1, "embeddings and layout disagree on the item count"
        self.layout = layout
        order = torch.from_numpy(layout.order)
        embeddings = item_embeddings.detach().float()
        if np.array_equal(layout.order, np.arange(1, layout.n_items + 1)):
            self.embeddings = embeddings[1:].contiguous()  # already laid out by category: no copy
        else:
            self.embeddings = embeddings[order].contiguous()  # (N, D) permuted
        self.order = order  # (N,) item_idx at each permuted position
        self.starts = torch.from_numpy(layout.starts)
        self.sizes = torch.from_numpy(layout.sizes)
        self._starts, self._sizes = layout.starts.tolist(), layout.sizes.tolist()  # Python ints for the loop
        self._positions = torch.arange(int(layout.sizes.max(initial=0)))
        self._position_category = torch.repeat_interleave(torch.arange(self.sizes.numel()), self.sizes)  # (N,)
        self._item_category = torch.zeros(layout.n_items + 1, dtype=torch.int64)
        self._item_category[order] = self._position_category
        self._position = torch.zeros(layout.n_items + 1, dtype=torch.int64)  # item_idx -> permuted position
        self._position[order] = torch.arange(layout.n_items)

    @classmethod
    def from_catalog(cls, item_embeddings: torch.Tensor, catalog: ItemCatalog) -> CategoryIndex:
        """Index laid out by the catalogue's item categories."""
        return cls(item_embeddings, CategoryLayout.from_catalog(catalog))

    @property
    def n_items(self) -> int:
        """Number of real items."""
        return self.layout.n_items

    def n_candidates(self, selected: torch.Tensor) -> torch.Tensor:
        """(B,) int64 number of items in each row's chosen categories."""
        return (selected * self.sizes).sum(dim=1)

    def search(
        self,
        queries: torch.Tensor | ItemQuery,
        k: int,
        *,
        selected: torch.Tensor,
        exclude: torch.Tensor | None = None,
        include: torch.Tensor | None = None,
        strategy: Literal["auto", "blocks", "dense"] = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items of each query among the items of its chosen categories (and ``include``'s).

        Args:
            queries: (B, D) item queries (inner-product scores), or an `ItemQuery` (the model's own scores).
            k: items wanted per row.
            selected: (B, C) bool chosen categories (`hiersrec.retrieval.category.select_categories`).
            exclude: optional (B, E) item indices never to return (0-padded).
            include: optional (B, I) item indices that are candidates whatever their category (0-padded; e.g. the
                session's own items), scored exactly as the chosen categories' items.
            strategy: for a batch, ``"blocks"`` scores the chosen category blocks only; ``"dense"`` scores
                every item in one matrix product and masks the others, cheaper when categories are small and
                many (each block has a fixed cost); ``"auto"`` picks the cheaper. Results are the same.

        Returns:
            (item_idx (B, k'), scores (B, k')), padded with item 0 and ``-inf`` where a row has fewer
            eligible candidates.
        """
        query = queries if isinstance(queries, ItemQuery) else ItemQuery(queries, torch.zeros(0, 0))
        vectors = query.vectors.float()
        extra = None if include is None or not include.numel() else self._included(vectors, query, selected, include)
        if vectors.shape[0] > 1 and (
            strategy == "dense" or (strategy == "auto" and self._dense_is_cheaper(selected, vectors.shape[1]))
        ):
            ids, scores = self._dense(vectors, selected)
            scores = self._adjusted(scores, self._position_category, query)
            if extra is not None:  # every item has a column here: the extras fill their own
                rows, columns = (extra[0] > 0).nonzero(as_tuple=True)
                scores[rows, self._position[extra[0][rows, columns]]] = extra[1][rows, columns]
            extra = None
        elif vectors.shape[0] == 1:
            ids, scores = self._candidates_one(vectors[0], selected[0])
            scores = self._adjusted(scores, self._item_category[ids], query)
        else:
            ids, scores = self._best_per_category(vectors, selected, k + _max_excluded(exclude), query)
        if extra is not None:
            ids, scores = torch.cat([ids, extra[0]], dim=1), torch.cat([scores, extra[1]], dim=1)
        ids, values = top_k(mask_excluded(ids, scores, exclude), k, ids)
        return _trim(ids, values, k, self.n_items)

    def _candidates_one(self, query: torch.Tensor, selected: torch.Tensor):
        # All candidate scores of one query, written slice by slice into one buffer. Categories adjacent in
        # the layout (consecutive indices) form one run, read as a single slice.
        runs: list[list[int]] = []
        for category in selected.nonzero().squeeze(1).tolist():
            start = self._starts[category]
            end = start + self._sizes[category]
            if runs and runs[-1][1] == start:
                runs[-1][1] = end
            else:
                runs.append([start, end])
        total = sum(end - start for start, end in runs)
        scores, ids = torch.empty((1, total)), torch.empty((1, total), dtype=torch.int64)
        column = 0
        for start, end in runs:
            width = end - start
            torch.mv(self.embeddings[start:end], query, out=scores[0, column : column + width])
            ids[0, column : column + width] = self.order[start:end]
            column += width
        return ids, scores

    def _included(self, vectors: torch.Tensor, query: ItemQuery, selected: torch.Tensor, include: torch.Tensor):
        # (B, I) ids and exact scores of each row's distinct `include` items outside its chosen categories (those
        # inside are candidates already); -inf elsewhere. A within-category normaliser needs the item's whole
        # category: such categories' blocks are scored for the normaliser alone.
        ids, _ = include.sort(dim=1)
        repeated = torch.zeros_like(ids, dtype=torch.bool)
        repeated[:, 1:] = ids[:, 1:] == ids[:, :-1]
        categories = self._item_category[ids]
        keep = (ids > 0) & ~repeated & ~selected.gather(1, categories)
        ids = ids.masked_fill(~keep, 0)
        inner = (self.embeddings[self._position[ids]] @ vectors.unsqueeze(2)).squeeze(2)  # (B, I)
        scores = inner.masked_fill(~keep, NEG_INF)
        rows, columns = keep.nonzero(as_tuple=True)
        if rows.numel() and query.normalise_within_category:
            pair_categories = categories[rows, columns]
            normaliser = torch.empty(rows.numel())
            for category in torch.unique(pair_categories).tolist():
                at = (pair_categories == category).nonzero().squeeze(1)
                start, size = self._starts[category], self._sizes[category]
                normaliser[at] = (vectors[rows[at]] @ self.embeddings[start : start + size].T).logsumexp(dim=1)
            scores[rows, columns] -= normaliser
        if rows.numel() and query.category_offsets is not None:
            scores[rows, columns] += query.category_offsets.float()[rows, categories[rows, columns]]
        return ids, scores

    def _adjusted(self, inner: torch.Tensor, categories: torch.Tensor, query: ItemQuery) -> torch.Tensor:
        # The query's per-category terms on whole chosen categories (a no-op for plain inner products).
        return category_adjusted(inner, categories, query, n_categories=self.sizes.numel())

    def _dense_is_cheaper(self, selected: torch.Tensor, dim: int) -> bool:
        # Multiply-adds of each strategy, plus the fixed cost of each distinct block.
        blocks = (
            int((selected.sum(dim=0) * self.sizes).sum()) * dim + int(selected.any(dim=0).sum()) * PER_CATEGORY_COST
        )
        return selected.shape[0] * self.n_items * dim < blocks

    def _dense(self, queries: torch.Tensor, selected: torch.Tensor):
        scores = queries @ self.embeddings.T  # (B, N) every item, in layout order
        scores.masked_fill_(~selected[:, self._position_category], NEG_INF)
        return self.order.expand(scores.shape), scores

    def _best_per_category(self, queries: torch.Tensor, selected: torch.Tensor, fetch: int, query: ItemQuery):
        # Each chosen category's block is read once and multiplied with the queries of every row choosing it. A
        # row's `fetch` best entries are then found without a top-k per block: the rows' thresholds come from the
        # blocks' group maxima and one comparison per block keeps the entries that can still be among them
        # (`hiersrec.retrieval.survivors`). The query's category terms are applied to whole blocks first (the
        # within-category normaliser needs every item). A bf16 copy of the matrix does not pay here on CPU: the
        # blocks' products are too thin to gain, and each new shape costs a oneDNN kernel set-up.
        adjusts = query.category_offsets is not None or query.normalise_within_category
        pairs = selected.T.nonzero()  # (P, 2) (category, row), grouped by category
        categories, counts = torch.unique_consecutive(pairs[:, 0], return_counts=True)
        blocks, group_rows, maxima = [], [], []
        for category, rows in zip(categories.tolist(), pairs[:, 1].split(counts.tolist()), strict=True):
            start, size = self._starts[category], self._sizes[category]
            block = queries[rows] @ self.embeddings[start : start + size].T  # (b, size)
            if adjusts:
                block = self._adjusted(block, torch.full((size,), category), query.rows(rows))
            blocks.append((start, rows, block))
            block_maxima = group_maxima(block)
            group_rows.append(rows.repeat_interleave(block_maxima.shape[1]))
            maxima.append(block_maxima.reshape(-1))
        if not blocks:
            return flat_rows([], [], [], queries.shape[0])
        threshold = kth_largest(torch.cat(group_rows), torch.cat(maxima), queries.shape[0], fetch)
        rows_out, ids_out, scores_out = [], [], []
        for start, rows, block in blocks:
            at_row, column = (block >= threshold[rows, None]).nonzero(as_tuple=True)
            rows_out.append(rows[at_row])
            ids_out.append(self.order[start + column])
            scores_out.append(block[at_row, column])
        return flat_rows(rows_out, ids_out, scores_out, queries.shape[0])


def _low_precision_copy(embeddings: torch.Tensor, precision: Precision) -> tuple[torch.Tensor | None, float]:
    # The bf16 copy of an fp32 item matrix and its largest row norm (for the error bound), or (None, 0) in fp32.
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"index precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "fp32" or embeddings.numel() == 0:
        return None, 0.0
    return embeddings.bfloat16(), float(torch.linalg.vector_norm(embeddings, dim=1).max())


def _max_excluded(exclude: torch.Tensor | None) -> int:
    # An excluded item can hold one of a block's best slots: fetch that many more per block.
    return 0 if exclude is None or exclude.numel() == 0 else int((exclude > 0).sum(dim=1).max())


def _trim(ids: torch.Tensor, values: torch.Tensor, k: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Width min(k, n_items); entries without an eligible item become (0, -inf).
    width = min(k, n_items)
    ids, values = ids[:, :width], values[:, :width]
    if ids.shape[1] < width:
        pad = width - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (0, pad), value=0)
        values = torch.nn.functional.pad(values, (0, pad), value=NEG_INF)
    return ids.masked_fill(values == NEG_INF, 0), values
