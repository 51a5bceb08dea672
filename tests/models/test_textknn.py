"""Text-kNN against a brute-force NumPy reference: neighbours, decayed scoring, content only, clear errors.

The contract (shapes, padding, batch = alone, save -> load, serving) is checked for textknn by test_contract.py,
which runs over the registry; TF-IDF itself by its doctest and below.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.data.text import tfidf_vectors
from hiersrec.errors import ConfigError
from hiersrec.models import make_baseline
from hiersrec.models.textknn import TextKNN, nearest_neighbours

TITLES = ("", "red cordless drill", "cordless drill battery", "drill bit set", "red paint", "blue paint roller",
          "paint roller tray", "", "safety goggles")  # fmt: skip
"""Item 7 has no text; items share tokens in chains (drill, paint, roller)."""


def _catalog(text: tuple[str, ...] | None = TITLES) -> ItemCatalog:
    n_rows = len(TITLES)
    return ItemCatalog(item_category=np.r_[0, np.ones(n_rows - 1, dtype=np.int64)], n_categories=1, text=text)


NO_CLICKS = SessionData(offsets=np.zeros(1, dtype=np.int64), items=np.zeros(0, dtype=np.int64))


def _reference_similarity(vectors: np.ndarray, neighbours: int) -> np.ndarray:
    """(V, V) float64: each row's `neighbours` largest positive cosines to other real items, the rest 0."""
    cosine = vectors @ vectors.T
    reference = np.zeros_like(cosine)
    for i in range(1, len(cosine)):
        candidates = [(cosine[i, j], j) for j in range(1, len(cosine)) if j != i and cosine[i, j] > 0]
        for value, j in sorted(candidates, key=lambda pair: (-pair[0], pair[1]))[:neighbours]:
            reference[i, j] = value
    return reference


def test_tfidf_rows_are_unit_cosines_of_shared_tokens():
    rows = tfidf_vectors(TITLES).toarray()
    norms = np.linalg.norm(rows, axis=1)
    assert np.allclose(norms[[1, 2, 3, 4, 5, 6, 8]], 1.0) and norms[0] == norms[7] == 0.0
    cosine = rows @ rows.T
    assert cosine[1, 2] > 0 and cosine[1, 5] == 0.0  # "cordless drill" shared; drill vs paint roller: nothing
    # A rare token weighs more than a common one: "red" (2 texts) vs "paint" (3 texts) in "red paint".
    vocabulary_row = rows[4]
    assert np.count_nonzero(vocabulary_row) == 2 and vocabulary_row.max() > vocabulary_row[vocabulary_row > 0].min()


@pytest.mark.parametrize("neighbours", [1, 2, 100])
def test_neighbours_match_brute_force(neighbours):
    vectors = tfidf_vectors(TITLES).toarray()
    similarity = nearest_neighbours(vectors, neighbours).toarray()
    np.testing.assert_allclose(similarity, _reference_similarity(vectors, neighbours), rtol=1e-6)
    assert (np.diag(similarity) == 0).all() and (similarity[0] == 0).all() and (similarity[:, 0] == 0).all()


def test_sparse_and_dense_vectors_and_blocks_agree(monkeypatch):
    vectors = tfidf_vectors(TITLES)
    whole = nearest_neighbours(vectors.toarray(), 3).toarray()
    import hiersrec.models.textknn as textknn

    monkeypatch.setattr(textknn, "_BLOCK_ENTRIES", 10)  # one row per block, vectors kept sparse
    np.testing.assert_allclose(nearest_neighbours(sp.csr_matrix(vectors), 3).toarray(), whole, rtol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_score_is_the_decayed_sum_of_the_clicks_neighbour_rows(decay):
    model = TextKNN(neighbours=3, decay=decay).fit(NO_CLICKS, _catalog())
    similarity = model.similarity_.toarray()
    sessions = [[1], [4, 2, 1], [5, 5, 3], [7]]
    items, lengths = left_pad(sessions, max_len=10)
    scores = model.score(make_batch(items, lengths, _catalog())).numpy()
    for row, session in enumerate(sessions):
        expected = sum(decay ** (len(session) - 1 - t) * similarity[item] for t, item in enumerate(session))
        np.testing.assert_allclose(scores[row, 1:], expected[1:], rtol=1e-6, atol=1e-7)
        assert scores[row, 0] == float("-inf")
    assert (scores[3, 1:] == 0).all()  # an item without text has no neighbours


def test_items_nobody_clicked_are_scored_from_their_text():
    # Content only: no training session at all, yet "drill bit set" follows a drill click.
    model = make_baseline("textknn").fit(NO_CLICKS, _catalog())
    items, lengths = left_pad([[1]], max_len=5)
    scores = model.score(make_batch(items, lengths, _catalog())).numpy()[0]
    assert scores[2] > scores[3] > 0 and scores[5] == 0.0


def test_clear_errors():
    with pytest.raises(ConfigError, match="has none"):
        TextKNN().fit(NO_CLICKS, _catalog(text=None))
    with pytest.raises(ConfigError, match="has none"):
        TextKNN().fit(NO_CLICKS, _catalog(text=("",) * len(TITLES)))
    with pytest.raises(ConfigError, match="encoder"):
        TextKNN(encoder="bert").fit(NO_CLICKS, _catalog())
    with pytest.raises(ConfigError, match="decay"):
        TextKNN(decay=1.5).fit(NO_CLICKS, _catalog())
    with pytest.raises(ConfigError, match="neighbours"):
        TextKNN(neighbours=0).fit(NO_CLICKS, _catalog())
