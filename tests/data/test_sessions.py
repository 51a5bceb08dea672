import numpy as np
import pytest

from hiersrec.data.batching import left_pad, prefix_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import DataError

SESSIONS = SessionData.from_lists([[1, 2], [3, 4, 5], [6], [7, 8, 9, 1]])
CATALOG = ItemCatalog(item_category=np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3]), n_categories=3)


def test_csr_layout():
    assert SESSIONS.offsets.tolist() == [0, 2, 5, 6, 10]
    assert SESSIONS.lengths.tolist() == [2, 3, 1, 4]
    assert SESSIONS.session(3).tolist() == [7, 8, 9, 1]


def test_all_prefix_targets_are_sum_of_length_minus_one():
    targets = SESSIONS.target_positions("all_prefixes")
    assert targets.size == sum(n - 1 for n in SESSIONS.lengths)
    assert SESSIONS.items[targets].tolist() == [2, 4, 5, 8, 9, 1]


def test_last_item_targets_skip_single_click_sessions():
    targets = SESSIONS.target_positions("last_item")
    assert SESSIONS.items[targets].tolist() == [2, 5, 1]


def test_unknown_protocol():
    with pytest.raises(DataError, match="protocol"):
        SESSIONS.target_positions("random")


def test_subset_and_tail_split_keep_whole_sessions():
    head, tail = SESSIONS.split_tail(0.5)
    assert head.to_lists() == [[1, 2], [3, 4, 5]]
    assert tail.to_lists() == [[6], [7, 8, 9, 1]]
    assert SESSIONS.subset(np.array([3, 0])).to_lists() == [[7, 8, 9, 1], [1, 2]]


def test_tail_split_rejects_empty_sides():
    with pytest.raises(DataError, match="empty"):
        SessionData.from_lists([[1, 2]]).split_tail(0.5)


def test_padding_index_is_rejected():
    with pytest.raises(DataError, match=">= 1"):
        SessionData.from_lists([[0, 1]])


def test_prefix_batch_left_pads_and_truncates_to_recent_clicks():
    targets = SESSIONS.target_positions("all_prefixes")
    batch = prefix_batch(SESSIONS, CATALOG, targets, max_len=2)
    assert batch.items.tolist() == [[0, 1], [0, 3], [3, 4], [0, 7], [7, 8], [8, 9]]
    assert batch.lengths.tolist() == [1, 1, 2, 1, 2, 2]
    assert batch.categories.tolist() == [[0, 1], [0, 1], [1, 2], [0, 3], [3, 3], [3, 3]]
    assert batch.target_items.tolist() == [2, 4, 5, 8, 9, 1]
    assert batch.target_categories.tolist() == [1, 2, 2, 3, 3, 1]


def test_left_pad_keeps_most_recent_clicks():
    items, lengths = left_pad([[1, 2, 3], [4], []], max_len=2)
    assert items.tolist() == [[2, 3], [0, 4], [0, 0]]
    assert lengths.tolist() == [2, 1, 0]
