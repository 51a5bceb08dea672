"""Approximate inner-product search with FAISS, behind the same ``search`` call as `ExactIndex`.

FAISS is an optional extra (``pip install hiersrec[faiss]``), imported when an index is built, never by
``import hiersrec``. Used by the benchmarks to compare category candidates with the usual ANN indexes.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

from hiersrec.errors import ConfigError
from hiersrec.retrieval.index import NEG_INF, mask_excluded, top_k

logger = logging.getLogger(__name__)

FaissKind = Literal["flat", "ivf", "hnsw"]


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ConfigError(f"FAISS indexes need the 'faiss' extra ({error}); pip install 'hiersrec[faiss]'") from None
    return faiss


class FaissIndex:
    """A FAISS inner-product index over the item output embeddings (row 0, padding, is left out).

    Kinds: ``"flat"`` (exact, the equivalence check), ``"ivf"`` (``IndexIVFFlat``: k-means cells, ``nprobe``
    of them searched) and ``"hnsw"`` (``IndexHNSWFlat``: a proximity graph, ``ef_search`` candidates kept).

    Example:
        >>> index = FaissIndex(item_embeddings, "hnsw", ef_search=128)  # doctest: +SKIP
        >>> item_idx, scores = index.search(queries, 20)  # doctest: +SKIP
    """

    def __init__(
        self,
        item_embeddings: torch.Tensor,
        kind: FaissKind = "hnsw",
        *,
        n_lists: int | None = None,
        n_probe: int = 16,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        train_per_list: int = 256,
        seed: int = 0,
    ) -> None:
        """Build the index.

        Args:
            item_embeddings: (V, D) item output embeddings, row 0 = padding.
            kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
            n_lists: IVF cells (default ``sqrt(n_items)``).
            n_probe: IVF cells searched per query.
            hnsw_m: HNSW links per node.
            ef_construction: HNSW build-time beam width.
            ef_search: HNSW search-time beam width.
            train_per_list: IVF k-means trains on at most this many sampled items per cell.
            seed: seed of the IVF k-means and its sample.
        """
        faiss = _import_faiss()
        vectors = np.ascontiguousarray(item_embeddings[1:].detach().float().numpy())
        n_items, dim = vectors.shape
        self.kind = kind
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            n_lists = n_lists or max(1, int(np.sqrt(n_items)))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = seed
            self.index.cp.max_points_per_centroid = train_per_list
            self.index.train(vectors)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
        else:
            raise ConfigError(f"unknown FAISS index kind {kind!r}; use 'flat', 'ivf' or 'hnsw'")
        self.index.add(vectors)
        self.set_search_params(n_probe=n_probe, ef_search=ef_search)
        logger.info("built FAISS %s index over %d items of dimension %d", kind, n_items, dim)

    @property
    def n_items(self) -> int:
        """Number of real items."""
        return int(self.index.ntotal)

    def set_search_params(self, *, n_probe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/speed trade-off: IVF cells searched, or HNSW beam width."""
        if n_probe is not None and self.kind == "ivf":
            self.index.nprobe = n_probe
        if ef_search is not None and self.kind == "hnsw":
            self.index.hnsw.efSearch = ef_search

    def search(
        self, queries: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items of each (B, D) query, as `ExactIndex.search` (ids are ``item_idx``; 0 = none found)."""
        n_excluded = 0 if exclude is None or exclude.numel() == 0 else int((exclude > 0).sum(dim=1).max())
        fetch = min(k + n_excluded, self.n_items)
        scores, rows = self.index.search(np.ascontiguousarray(queries.detach().float().numpy()), fetch)
        ids = torch.from_numpy(rows + 1)  # FAISS row r holds item_idx r + 1; -1 (not found) becomes 0
        values = torch.from_numpy(scores).masked_fill(ids == 0, NEG_INF)
        ids, values = top_k(mask_excluded(ids, values, exclude), k, ids)
        return ids.masked_fill(values == NEG_INF, 0), values
