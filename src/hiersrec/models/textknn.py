"""Text-kNN: items scored by how similar their text is to the session's recent clicks (content-based kNN).

Each item's text (``ItemCatalog.text``: a title, a description) becomes a unit vector, TF-IDF over its
tokens (``encoder="tfidf"``, no dependency) or a frozen all-MiniLM-L6-v2 sentence embedding
(``encoder="minilm"``, the ``text`` extra). Every item keeps its ``neighbours`` most similar other items
(cosine, clipped at 0; an item is not its own neighbour), and a prefix is scored by the sum of its clicks'
neighbour rows, the click ``t`` steps before the last weighted ``decay ** t`` (``decay = 0``: the last click
only). The training sessions are not read: the model knows the catalogue, not the clicks, so it scores
items nobody has clicked yet, and it is the partner that brings text to a fused HierSRec
(``fusion.partner = "textknn"``).

Defaults: ``encoder="tfidf", neighbours=100, decay=0.5``, chosen on amazon-scientific's validation split
(benchmarks/results/textknn-amazon-scientific-2026-12-03.md).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.data.text import sentence_embeddings, tfidf_vectors
from hiersrec.errors import ConfigError
from hiersrec.models._hyperparams import check_choice, check_non_negative, check_positive_int
from hiersrec.models.base import FittedModel, check_is_fitted, mask_padding

ENCODERS = ("tfidf", "minilm")
_BLOCK_ENTRIES = 1 << 24  # similarities computed per block of rows: bounded memory on large catalogues


class TextKNN(FittedModel):
    """Content similarity of every item to each prefix's recent clicks.

    Args:
        encoder: item text as ``"tfidf"`` vectors or frozen ``"minilm"`` sentence embeddings.
        neighbours: most similar items kept per item.
        decay: weight ratio of a click to the one after it (0: the last click only; 1: all clicks alike).
    """

    name: ClassVar[str] = "textknn"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "neighbours": (20, 50, 100, 200, 500),
        "decay": (0.0, 0.2, 0.5, 0.8, 1.0),
    }

    def __init__(self, encoder: str = "tfidf", neighbours: int = 100, decay: float = 0.5) -> None:
        self.encoder = encoder
        self.neighbours = neighbours
        self.decay = decay

    @classmethod
    def unusable_reason(cls, catalog: ItemCatalog) -> str | None:
        """A sentence when ``catalog`` has no item text to compare, else None."""
        if catalog.text is None or not any(text.strip() for text in catalog.text[1:]):
            return "textknn scores items by their text, and this catalogue has none"
        return None

    def fit(self, train: SessionData, catalog: ItemCatalog) -> TextKNN:
        """Each item's ``neighbours`` nearest items by text; ``train`` is not read (content only).

        Raises:
            ConfigError: a hyperparameter is out of range, or the catalogue has no item text.
        """
        check_choice(self, "encoder", self.encoder, ENCODERS)
        check_positive_int(self, "neighbours", self.neighbours)
        check_non_negative(self, "decay", self.decay)
        if self.decay > 1:
            raise ConfigError(f"TextKNN: decay must be in [0, 1], got {self.decay!r}")
        reason = self.unusable_reason(catalog)
        if reason is not None:
            raise ConfigError(f"{reason}: prepare the data with item text (an items file with a text column) "
                              "or choose another model")  # fmt: skip
        vectors = tfidf_vectors(catalog.text) if self.encoder == "tfidf" else sentence_embeddings(catalog.text)
        self.similarity_ = nearest_neighbours(vectors, self.neighbours)
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 decayed sums of the clicks' neighbour similarities; column 0 = -inf."""
        check_is_fitted(self, "similarity_")
        items = batch.items.numpy()  # left-padded: the most recent click is the last column
        length = items.shape[1]
        steps_back = np.arange(length - 1, -1, -1, dtype=np.float64)
        weights = np.broadcast_to(np.power(self.decay, steps_back), items.shape)
        rows, columns = np.nonzero(items > 0)
        clicks = sp.csr_matrix(
            (weights[rows, columns].astype(np.float32), (rows, items[rows, columns])),
            shape=(items.shape[0], self.similarity_.shape[0]),
        )  # a repeated click adds its weights up
        scores = (clicks @ self.similarity_).toarray().astype(np.float32, copy=False)
        return mask_padding(torch.from_numpy(scores))


def nearest_neighbours(vectors: np.ndarray | sp.spmatrix, neighbours: int) -> sp.csr_matrix:
    """(V, V) CSR: row ``i`` holds the cosines of the ``neighbours`` items most similar to ``i``, clipped at 0.

    Rows of ``vectors`` must be unit length (or zero, for items without text). Row and column 0 (padding)
    and the diagonal stay empty; so do the zero similarities. Ties at the cut keep the smaller item indices.
    """
    n_rows = vectors.shape[0]
    if sp.issparse(vectors) and n_rows * vectors.shape[1] <= _BLOCK_ENTRIES:
        vectors = vectors.toarray()
    transposed = vectors.T.tocsc() if sp.issparse(vectors) else np.ascontiguousarray(vectors.T)
    keep = min(neighbours, n_rows - 1)
    block = max(1, _BLOCK_ENTRIES // max(n_rows, 1))
    kept_rows, kept_columns, kept_values = [], [], []
    for start in range(1, n_rows, block):
        stop = min(start + block, n_rows)
        similarity = vectors[start:stop] @ transposed
        similarity = np.asarray(similarity.toarray() if sp.issparse(similarity) else similarity, dtype=np.float32)
        similarity[:, 0] = 0.0
        similarity[np.arange(stop - start), np.arange(start, stop)] = 0.0
        cut = -np.partition(-similarity, keep - 1, axis=1)[:, keep - 1 : keep]  # each row's keep-th largest
        above = similarity > cut
        at_cut = similarity == cut
        room = keep - above.sum(axis=1, keepdims=True)  # ties at the cut: the smaller item indices first
        kept = (above | (at_cut & (np.cumsum(at_cut, axis=1) <= room))) & (similarity > 0)
        rows, columns = np.nonzero(kept)
        kept_rows.append(rows + start)
        kept_columns.append(columns)
        kept_values.append(similarity[rows, columns])
    if not kept_rows:
        return sp.csr_matrix((n_rows, n_rows), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(kept_values), (np.concatenate(kept_rows), np.concatenate(kept_columns))),
        shape=(n_rows, n_rows),
        dtype=np.float32,
    )
