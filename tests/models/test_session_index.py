"""The kNN family's shared index: prefix encoding, candidate sampling, weighted overlaps, top-k selection."""

from __future__ import annotations

import numpy as np

from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.models._session_index import PrefixQuery, SessionIndex, top_k_mask

CATALOG = ItemCatalog(item_category=np.array([0] + [1] * 9), n_categories=1)


def _query(prefixes: list[list[int]]) -> PrefixQuery:
    items, lengths = left_pad(prefixes, max_len=50)
    return PrefixQuery.from_batch(make_batch(items, lengths, CATALOG))


def test_prefix_query_keeps_the_last_click_of_each_item():
    query = _query([[4, 2, 4, 7], [5]])
    assert query.rows.tolist() == [0, 0, 0, 1]
    assert query.items.tolist() == [2, 4, 7, 5]
    assert query.last_position.tolist() == [2, 3, 4, 1]
    assert query.lengths.tolist() == [4, 1]
    assert query.positions_of(np.array([0, 0, 1, 1]), np.array([4, 5, 5, 9])).tolist() == [3, 0, 1, 0]


def test_candidates_are_the_most_recent_sessions_sharing_an_item_with_weighted_overlaps():
    train = SessionData.from_lists([[1, 2], [2, 3, 2], [4], [3, 1, 5]])
    index = SessionIndex.build(train, n_items=9)
    assert index.session_items[1].toarray()[0, 2:4].tolist() == [3, 2]  # last positions of items 2, 3
    query = _query([[1, 3], [9]])  # item 1 (weight 10) in sessions 0, 3; item 3 (weight 1) in 1, 3; item 9 nowhere
    everything = index.candidates(query, sample_size=None, weights=np.array([10.0, 1.0, 5.0]))
    assert everything.rows.tolist() == [0, 0, 0] and everything.sessions.tolist() == [0, 1, 3]
    assert everything.n_shared.tolist() == [1, 1, 2]
    assert everything.weighted_shared.tolist() == [10.0, 1.0, 11.0]
    recent = index.candidates(query, sample_size=2, weights=np.array([10.0, 0.0, 5.0]))
    assert recent.sessions.tolist() == [1, 3] and recent.weighted_shared.tolist() == [0.0, 10.0]


def _reference_top_k(rows, similarity, sessions, k):
    # per row, by similarity then recency (larger session index), with a plain sort
    keep = np.zeros(rows.size, dtype=bool)
    for row in np.unique(rows):
        members = np.flatnonzero(rows == row)
        ranked = sorted(members, key=lambda i: (-similarity[i], -sessions[i]))
        keep[ranked[:k]] = True
    return keep


def test_top_k_mask_equals_a_plain_sort_with_recency_tie_breaks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 25, rng.integers(1, 6))
        rows = np.repeat(np.arange(counts.size), counts)
        sessions = np.concatenate([np.sort(rng.choice(500, c, replace=False)) for c in counts])
        similarity = rng.integers(0, 4, rows.size) / 3.0  # many ties
        k = int(rng.integers(1, 10))
        np.testing.assert_array_equal(top_k_mask(rows, similarity, k), _reference_top_k(rows, similarity, sessions, k))
