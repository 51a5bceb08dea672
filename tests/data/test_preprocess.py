"""Each preprocessing step on hand-made click frames with hand-checked results."""

from __future__ import annotations

import logging

import polars as pl
import pytest

from hiersrec.data.preprocess import (
    counts,
    drop_consecutive_duplicates,
    drop_unseen_items,
    filter_rare_items,
    filter_sessions_and_items,
    filter_short_sessions,
    order_clicks,
    require_sessions,
    session_time_from_last_click,
    split_by_days,
    split_by_fraction,
)
from hiersrec.errors import DataError

DAY = 86_400.0


def frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """Click frame from (session_id, item_id, timestamp) rows in file order; session time = last click."""
    clicks = pl.DataFrame(
        {
            "session_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [float(r[2]) for r in rows],
        }
    ).with_columns(row=pl.int_range(pl.len(), dtype=pl.Int64))
    return session_time_from_last_click(clicks)


def sessions(clicks: pl.DataFrame) -> list[tuple[str, list[str]]]:
    """(session_id, items) in frame order; each session must be one contiguous block."""
    out: list[tuple[str, list[str]]] = []
    for session, item in clicks.select("session_id", "item_id").iter_rows():
        if out and out[-1][0] == session:
            out[-1][1].append(item)
        else:
            assert session not in {s for s, _ in out}, f"session {session} is not contiguous"
            out.append((session, [item]))
    return out


def test_session_time_is_the_latest_click_time():
    clicks = frame([("s", "a", 5), ("t", "b", 1), ("s", "b", 9), ("s", "c", 7)])
    assert clicks["session_time"].to_list() == [9.0, 1.0, 9.0, 9.0]


def test_order_clicks_sorts_sessions_by_time_and_clicks_by_timestamp_stably():
    clicks = frame(
        [
            ("late", "x", 50),
            ("b", "p", 12),  # b and a end at the same time: b appears first in the file, so it comes first
            ("a", "q", 3),
            ("b", "q", 10),
            ("a", "r", 12),
            ("b", "r", 10),  # same timestamp as the b/q click above: file order is kept
            ("a", "s", 1),
        ]
    )
    assert sessions(order_clicks(clicks)) == [("b", ["q", "r", "p"]), ("a", ["s", "q", "r"]), ("late", ["x"])]


def test_drop_consecutive_duplicates_only_inside_a_session():
    clicks = order_clicks(frame([("s", "a", 1), ("s", "a", 2), ("s", "b", 3), ("s", "a", 4), ("t", "a", 9)]))
    assert sessions(drop_consecutive_duplicates(clicks, "drop")) == [("s", ["a", "b", "a"]), ("t", ["a"])]
    assert drop_consecutive_duplicates(clicks, "keep").equals(clicks)
    with pytest.raises(DataError, match="consecutive-duplicate policy 'merge'"):
        drop_consecutive_duplicates(clicks, "merge")


def test_filter_short_sessions_and_rare_items():
    clicks = order_clicks(
        frame([("s", "a", 1), ("s", "b", 2), ("t", "a", 3), ("u", "a", 4), ("u", "c", 5), ("u", "a", 6)])
    )
    assert sessions(filter_short_sessions(clicks, 2)) == [("s", ["a", "b"]), ("u", ["a", "c", "a"])]
    assert sessions(filter_short_sessions(clicks, 3)) == [("u", ["a", "c", "a"])]
    # Support counts clicks, not sessions: a has 4 clicks, b and c one each.
    assert sessions(filter_rare_items(clicks, 2)) == [("s", ["a"]), ("t", ["a"]), ("u", ["a", "a"])]


def test_filter_sessions_and_items_one_pass_versus_until_stable():
    # Pass 1: drop the length-1 session w; x then has one click (its other one was in w) and goes, so
    # v = [b] is too short and goes too. That leaves b with one click: only a second pass removes it.
    clicks = order_clicks(
        frame(
            [
                ("w", "x", 1),
                ("v", "x", 2),
                ("v", "b", 3),
                ("s", "b", 4),
                ("s", "c", 5),
                ("s", "c", 6),
            ]
        )
    )
    one_pass = filter_sessions_and_items(clicks, 2, 2)
    assert sessions(one_pass) == [("s", ["b", "c", "c"])]
    stable = filter_sessions_and_items(clicks, 2, 2, until_stable=True)
    assert sessions(stable) == [("s", ["c", "c"])]


def test_split_by_days_drops_sessions_exactly_at_the_split_time(caplog):
    day0 = 1_600_000_000.0
    clicks = order_clicks(
        frame(
            [
                ("old", "a", day0),
                ("edge", "a", day0 + 3 * DAY),  # max - 7 days exactly: neither train nor test
                ("new", "a", day0 + 5 * DAY),
                ("last", "a", day0 + 10 * DAY),
            ]
        )
    )
    with caplog.at_level(logging.INFO, logger="hiersrec.data.preprocess"):
        train, test = split_by_days(clicks, 7)
    assert [s for s, _ in sessions(train)] == ["old"]
    assert [s for s, _ in sessions(test)] == ["new", "last"]
    assert "1 sessions (1 clicks) exactly at the split time dropped" in caplog.text


def test_split_by_fraction_takes_the_most_recent_sessions():
    clicks = order_clicks(frame([(s, "a", t) for s, t in [("c", 3), ("a", 1), ("d", 4), ("b", 2), ("e", 5)]]))
    train, test = split_by_fraction(clicks, 0.4)
    assert [s for s, _ in sessions(train)] == ["a", "b", "c"]
    assert [s for s, _ in sessions(test)] == ["d", "e"]
    with pytest.raises(DataError, match="test fraction"):
        split_by_fraction(clicks, 1.0)


def test_drop_unseen_items_then_refilter():
    train = frame([("s", "a", 1), ("s", "b", 2)])
    test = order_clicks(frame([("t", "a", 3), ("t", "z", 4), ("u", "z", 5), ("u", "b", 6)]))
    kept = drop_unseen_items(test, train)
    assert sessions(kept) == [("t", ["a"]), ("u", ["b"])]
    assert filter_short_sessions(kept, 2).height == 0


def test_counts_and_empty_result_error():
    clicks = frame([("s", "a", 1), ("s", "b", 2), ("t", "a", 3)])
    assert counts(clicks) == {"clicks": 3, "sessions": 2}
    with pytest.raises(DataError, match="no test session left after filtering; lower min support"):
        require_sessions(clicks.head(0), "test", "lower min support")
    with pytest.raises(DataError, match="no session left to split"):
        split_by_days(clicks.head(0), 7)


def test_steps_log_what_they_remove(caplog):
    clicks = order_clicks(frame([("s", "a", 1), ("s", "a", 2), ("t", "b", 3)]))
    with caplog.at_level(logging.INFO, logger="hiersrec.data.preprocess"):
        filter_short_sessions(drop_consecutive_duplicates(clicks), 2)
    assert "drop_consecutive_duplicates: removed 1 clicks, 0 sessions" in caplog.text
    assert "filter_short_sessions(<2): removed 2 clicks, 2 sessions" in caplog.text
