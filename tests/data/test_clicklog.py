"""Generic click-log import: mapped columns, explicit options, item tables and bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hiersrec.data.ingest.clicklog import ClickLogOptions, read_clicklog
from hiersrec.data.ingest.readers import parse_times
from hiersrec.errors import ConfigError, DataError

# sid;pid;ts in file order. Hand-checked with min_item_support=2, consecutive duplicates dropped, test = the
# most recent 25% of sessions:
# * s1 [a, a, b] -> [a, b]; s4 is ordered by time -> [a, b, c]; s5 [e] is too short;
# * supports: a 3, b 4, c 3, f 2, d 1 -> d goes, so s3 [c, d] -> [c] is too short;
# * sessions left s1, s2, s4, s6 -> test = s6 (latest); train s1 [a, b], s2 [b, c], s4 [a, b, c];
# * items by first appearance in train: a 1, b 2, c 3; test s6 [b, f, a, f] drops f (unseen) -> [2, 1].
LOG = """sid;pid;ts
s1;a;2020-03-01T10:00:00
s1;a;2020-03-01T10:01:00
s1;b;2020-03-01T10:02:00
s2;b;2020-03-01T11:00:00
s2;c;2020-03-01T11:01:00
s3;c;2020-03-01T12:00:00
s3;d;2020-03-01T12:01:00
s4;a;2020-03-01T13:00:00
s4;c;2020-03-01T13:02:00
s4;b;2020-03-01T13:01:00
s5;e;2020-03-01T14:00:00
s6;b;2020-03-01T15:00:00
s6;f;2020-03-01T15:01:00
s6;a;2020-03-01T15:02:00
s6;f;2020-03-01T15:03:00
"""
ITEMS = """pid;cat;title;brand;price
a;x;Alpha;B1;1.5
b;y;Beta;B2;
c;x;;B1;2
"""
OPTIONS = ClickLogOptions(
    session_column="sid",
    item_column="pid",
    time_column="ts",
    separator=";",
    item_id_column="pid",
    category_column="cat",
    text_column="title",
    categorical_columns=("brand",),
    numeric_columns=("price",),
    min_item_support=2,
    consecutive_duplicates="drop",
    test_days=None,
    test_fraction=0.25,
)


@pytest.fixture
def log_files(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    (tmp_path / "items.csv").write_text(ITEMS)
    return tmp_path / "log.csv", tmp_path / "items.csv"


def with_options(**changes) -> ClickLogOptions:
    return ClickLogOptions(**{**OPTIONS.__dict__, **changes})


def test_hand_checked_import_with_item_table(log_files):
    data = read_clicklog(*log_files, OPTIONS)
    assert data.name == "log"
    assert data.train.to_lists() == [[1, 2], [2, 3], [1, 2, 3]]
    assert data.test.to_lists() == [[2, 1]]
    assert data.vocab.item_ids == ("<pad>", "a", "b", "c")
    assert data.vocab.category_ids == ("<pad>", "x", "y")
    assert data.catalog.item_category.tolist() == [0, 1, 2, 1]
    assert data.catalog.categorical["brand"].tolist() == [0, 1, 2, 1]
    np.testing.assert_array_equal(data.catalog.numeric["price"], [np.nan, 1.5, np.nan, 2.0])
    assert data.catalog.text == ("", "Alpha", "Beta", "")
    # 2020-03-01T10:00:00Z = 1583056800; s1 keeps its first a (10:00) and b (10:02).
    assert data.train.timestamps[:2].tolist() == [1583056800, 1583056920]
    assert data.options["min_item_support"] == 2 and data.options["consecutive_duplicates"] == "drop"
    assert [s["step"] for s in data.provenance["steps"]] == ["read", "filtered", "train", "test"]


def test_keeping_duplicates_and_default_support_change_the_result(log_files):
    kept = read_clicklog(*log_files, with_options(consecutive_duplicates="keep"))
    assert kept.train.to_lists() == [[1, 1, 2], [2, 3], [1, 2, 3]]
    with pytest.raises(DataError, match="no session left after filtering.*lower min_item_support"):
        read_clicklog(*log_files, with_options(min_item_support=5))


def test_missing_category_policies_and_no_item_table(log_files):
    assert read_clicklog(*log_files, OPTIONS).options["items_without_category_unknown"] == 0
    with pytest.raises(DataError, match=r"log.csv: 3 clicked items have no category \(first: \['d', 'e', 'f'\]\)"):
        read_clicklog(*log_files, with_options(missing_category="error"))
    dropped = read_clicklog(*log_files, with_options(missing_category="drop"))
    assert dropped.train.to_lists() == [[1, 2], [2, 3], [1, 2, 3]]
    assert dropped.test.to_lists() == [[2, 1]]  # s6 without f
    assert dropped.options["items_without_category_dropped"] == 3
    with pytest.raises(ConfigError, match="need an item table"):
        read_clicklog(log_files[0], None, OPTIONS)
    bare = read_clicklog(log_files[0], None, with_options(categorical_columns=(), numeric_columns=(), text_column=None))
    assert bare.vocab.category_ids == ("<pad>", "unknown")
    assert bare.options["items_without_category_unknown"] == 3
    assert bare.catalog.text is None


def test_parquet_with_epoch_milliseconds_and_day_split(tmp_path):
    day_ms = 86_400_000
    log = pl.DataFrame(
        {
            "session_id": [1, 1, 2, 2, 3, 3, 4, 4],
            "item_id": [7, 8, 8, 7, 7, 8, 8, 9],
            "timestamp": [0, 1, day_ms, day_ms + 5, 3 * day_ms, 3 * day_ms + 9, 2 * day_ms, 2 * day_ms + 1],
        }
    )
    log.write_parquet(tmp_path / "log.parquet")
    options = ClickLogOptions(time_unit="ms", min_item_support=1, test_days=1.5)
    data = read_clicklog(tmp_path / "log.parquet", None, options)
    # split = 3 days + 9 ms - 1.5 days: sessions 1, 2 train; 4 (day 2) and 3 (day 3) test, in time order;
    # session 4 loses item 9 (unseen in train) and is then too short.
    assert data.vocab.item_ids == ("<pad>", "7", "8")
    assert data.train.to_lists() == [[1, 2], [2, 1]]
    assert data.test.to_lists() == [[1, 2]]
    assert data.test.timestamps.tolist() == [3 * 86_400, 3 * 86_400]


def test_missing_column_names_the_columns_found_and_the_option(log_files):
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['session'\]; found \['sid', 'pid', 'ts'\].*--session-column"
    ):
        read_clicklog(*log_files, with_options(session_column="session"))
    with pytest.raises(DataError, match=r"items.csv: missing column\(s\) \['category'\].*--category-column"):
        read_clicklog(*log_files, with_options(category_column="category"))


def test_unparsable_and_empty_values_name_their_line(tmp_path, log_files):
    bad = tmp_path / "bad.csv"
    bad.write_text(LOG.replace("s2;b;2020-03-01T11:00:00", "s2;b;yesterday"))
    with pytest.raises(DataError, match=r"bad.csv: line 5: column 'ts' has 'yesterday', expected a datetime"):
        read_clicklog(bad, log_files[1], OPTIONS)
    bad.write_text(LOG.replace("s3;c;2020-03-01T12:00:00", ";c;2020-03-01T12:00:00"))
    with pytest.raises(DataError, match=r"bad.csv: line 7: column 'sid' is empty"):
        read_clicklog(bad, log_files[1], OPTIONS)
    items = tmp_path / "bad_items.csv"
    items.write_text(ITEMS.replace("c;x;;B1;2", "c;x;;B1;cheap"))
    with pytest.raises(DataError, match=r"bad_items.csv: line 4: column 'price' has 'cheap', expected a finite number"):
        read_clicklog(log_files[0], items, OPTIONS)
    items.write_text(ITEMS + "a;y;Other;B1;1\n")
    with pytest.raises(DataError, match="item 'a' has 2 different rows"):
        read_clicklog(log_files[0], items, OPTIONS)


def test_empty_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        read_clicklog(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("session_id,item_id,timestamp\n")
    with pytest.raises(DataError, match="header.csv: the file has a header but no rows"):
        read_clicklog(tmp_path / "header.csv")
    with pytest.raises(DataError, match="nothing.csv: file not found"):
        read_clicklog(tmp_path / "nothing.csv")


def test_options_are_validated():
    with pytest.raises(ConfigError, match="exactly one of test_days and test_fraction"):
        ClickLogOptions(test_fraction=0.1)
    with pytest.raises(ConfigError, match="consecutive_duplicates"):
        ClickLogOptions(consecutive_duplicates="merge")
    with pytest.raises(DataError, match="missing-category policy"):
        ClickLogOptions(missing_category="guess")


def test_synthetic_log_round_trip_recovers_sessions(tmp_path, tiny_shop):
    # Sessions written as a log and read back with permissive thresholds give the same train sessions
    # (items renumbered by first appearance, so compare raw ids).
    train = tiny_shop.train
    raw = np.array(tiny_shop.vocab.item_ids)[train.items]
    session = np.repeat(np.arange(train.n_sessions), train.lengths)
    pl.DataFrame({"session_id": session, "item_id": raw, "timestamp": train.timestamps}).write_parquet(
        tmp_path / "log.parquet"
    )
    options = ClickLogOptions(min_item_support=1, min_session_length=2, test_days=None, test_fraction=0.2)
    data = read_clicklog(tmp_path / "log.parquet", None, options)
    assert data.train.n_sessions + data.test.n_sessions == train.n_sessions
    decoded = [data.vocab.decode_items(s) for s in data.train.to_lists()]
    expected = [tiny_shop.vocab.decode_items(s) for s in train.to_lists()[: data.train.n_sessions]]
    assert decoded == expected


def test_time_parsing_variants():
    iso = pl.DataFrame(
        {
            "t": [
                "2020-03-01T10:00:00",
                "2020-03-01 10:00:00.5",
                "2020-03-01",
                "2020-03-01T12:00:00+02:00",
                "2020-03-01T10:00:00Z",
            ]
        }
    )
    assert parse_times(iso, "t", "x.csv").to_list() == [
        1583056800.0,
        1583056800.5,
        1583020800.0,
        1583056800.0,
        1583056800.0,
    ]
    custom = pl.DataFrame({"t": ["01/03/2020 10:00"]})
    assert parse_times(custom, "t", "x.csv", fmt="%d/%m/%Y %H:%M").to_list() == [1583056800.0]
    numbers = pl.DataFrame({"t": ["1583056800000", " 1583056800500"]})
    assert parse_times(numbers, "t", "x.csv", unit="ms").to_list() == [1583056800.0, 1583056800.5]
    with pytest.raises(DataError, match="x.parquet: row 2: column 't' has 'noon'"):
        parse_times(pl.DataFrame({"t": ["2020-03-01", "noon"]}), "t", "x.parquet")
