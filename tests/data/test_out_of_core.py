"""The out-of-core click-log import gives the prepared dataset of the in-memory one, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from hiersrec.cli import ExitStatus, main
from hiersrec.data import storage
from hiersrec.data.ingest import streaming
from hiersrec.data.ingest.clicklog import ClickLogOptions, read_clicklog
from hiersrec.data.ingest.streaming import needs_out_of_core, parse_size, prepare_clicklog_out_of_core
from hiersrec.data.stats import dataset_stats, prepared_stats
from hiersrec.data.storage import load_prepared, read_manifest, save_prepared
from hiersrec.errors import ConfigError, DataError

HOUR, DAY = 3_600, 86_400


def shop_log(seed: int = 0, n_sessions: int = 600) -> pl.DataFrame:
    """A log with every case the recipe treats specially, rows shuffled out of time order.

    Times on a 6-hour grid (many sessions share their time, many clicks their timestamp, and sessions fall
    exactly on a day-based split time); 15% repeats of the previous item; Zipf-like popularity (items below
    the support threshold); items introduced over time (test clicks on items unseen in train).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, n_sessions)
    session = np.repeat(rng.permutation(n_sessions * 3)[:n_sessions], lengths)
    start = np.repeat(rng.integers(0, 40, n_sessions), lengths)
    times = 1_600_000_000 + (start + rng.integers(0, 2, session.size)) * 6 * HOUR
    newest = 20 + np.floor(times - times.min()).astype(np.int64) // (6 * HOUR) * 3  # the catalogue grows
    items = np.minimum(rng.zipf(1.4, session.size), newest)
    repeat = rng.random(session.size) < 0.15
    items = np.where(repeat, np.roll(items, 1), items)
    order = rng.permutation(session.size)
    return pl.DataFrame({"sid": session[order], "item": items[order].astype(str), "ts": times[order]})


def item_table(log: pl.DataFrame) -> pl.DataFrame:
    ids = log["item"].unique().sort()
    category = pl.Series([None if i % 7 == 0 else f"c{i % 5}" for i in range(ids.len())], dtype=pl.Utf8)
    return pl.DataFrame({"item": ids, "cat": category})


BASE = {"session_column": "sid", "item_column": "item", "time_column": "ts", "item_id_column": "item"}
BASE["category_column"] = "cat"
CASES = {
    "days": dict(test_days=1.0, min_item_support=3),
    "days_drop_until_stable": dict(
        test_days=2.0, min_item_support=4, consecutive_duplicates="drop", filter_until_stable=True
    ),
    "fraction": dict(test_days=None, test_fraction=0.2, min_item_support=2, min_session_length=3),
    "fraction_until_stable_drop_category": dict(
        test_days=None,
        test_fraction=0.3,
        min_item_support=5,
        filter_until_stable=True,
        consecutive_duplicates="drop",
        missing_category="drop",
    ),
}


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shop")
    log = shop_log()
    log.write_parquet(directory / "log.parquet")
    log.write_csv(directory / "log.csv")
    item_table(log).write_parquet(directory / "items.parquet")
    return directory


@pytest.fixture
def small_batches(monkeypatch):
    # Several batches of the log and several row groups of output sessions, on a log of a few thousand clicks.
    monkeypatch.setattr(streaming, "BATCH_ROWS", 300)
    monkeypatch.setattr(storage, "ROW_GROUP_SESSIONS", 50)


def assert_same_prepared(in_memory, out_of_core) -> None:
    expected, actual = read_manifest(in_memory), read_manifest(out_of_core)
    assert actual == expected  # files, fingerprint, counts, options and provenance (recipe counts included)
    assert actual["counts"]["train_sessions"] > 50 and actual["counts"]["test_sessions"] > 10


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_core_equals_in_memory_byte_for_byte(tmp_path, shop_files, small_batches, case):
    options = ClickLogOptions(**BASE, **CASES[case])
    log, items = shop_files / "log.parquet", shop_files / "items.parquet"
    save_prepared(read_clicklog(log, items, options), tmp_path / "memory")
    prepare_clicklog_out_of_core(log, tmp_path / "disk", items, options, partitions=4)
    assert_same_prepared(tmp_path / "memory", tmp_path / "disk")
    if case == "days":
        steps = read_manifest(tmp_path / "disk")["provenance"]["steps"]
        assert [s["step"] for s in steps] == ["read", "filtered", "train", "test"]


def test_the_log_has_the_cases_it_is_meant_to_have(shop_files):
    log = pl.read_parquet(shop_files / "log.parquet")
    times = log.group_by("sid").agg(pl.col("ts").max())["ts"]
    assert times.n_unique() < times.len() / 5  # session-time ties
    assert (times == times.max() - DAY).any()  # sessions exactly at the 1-day split time
    latest = log["ts"].max()
    late, early = log.filter(pl.col("ts") > latest - DAY)["item"], log.filter(pl.col("ts") < latest - DAY)["item"]
    assert not late.is_in(early.implode()).all()  # test clicks on items unseen in train
    data = read_clicklog(shop_files / "log.parquet", None, ClickLogOptions(**BASE, **CASES["days"]))
    steps = {s["step"]: s for s in data.provenance["steps"]}
    assert steps["filtered"]["clicks"] < steps["read"]["clicks"]


def test_text_log_one_partition_and_many(tmp_path, shop_files, small_batches):
    options = ClickLogOptions(**{k: v for k, v in BASE.items() if "category" not in k}, **CASES["fraction"])
    save_prepared(read_clicklog(shop_files / "log.csv", None, options), tmp_path / "memory")
    for partitions in (1, 7):
        prepare_clicklog_out_of_core(
            shop_files / "log.csv", tmp_path / f"disk{partitions}", None, options, partitions=partitions
        )
        assert_same_prepared(tmp_path / "memory", tmp_path / f"disk{partitions}")


def test_stats_from_the_folder_equal_stats_in_memory(tmp_path, shop_files, small_batches):
    options = ClickLogOptions(**BASE, **CASES["days"])
    prepare_clicklog_out_of_core(shop_files / "log.parquet", tmp_path / "disk", shop_files / "items.parquet", options)
    assert prepared_stats(tmp_path / "disk") == dataset_stats(load_prepared(tmp_path / "disk"))
    assert storage.pq.ParquetFile(tmp_path / "disk" / "train.parquet").num_row_groups > 2


def test_errors_name_the_row_of_the_file_in_a_later_batch(tmp_path, small_batches):
    lines = ["sid,item,ts"] + [f"{i // 3},{i % 5},{1_600_000_000 + i}" for i in range(2000)]
    lines[1500] = "7,,1600001499"
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    options = ClickLogOptions(session_column="sid", item_column="item", time_column="ts")
    with pytest.raises(DataError, match=r"log.csv: line 1501: column 'item' is empty"):
        prepare_clicklog_out_of_core(tmp_path / "log.csv", tmp_path / "out", None, options, partitions=2)
    with pytest.raises(DataError, match=r"log.csv: line 1501: column 'item' is empty"):
        read_clicklog(tmp_path / "log.csv", None, options)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_numbers_then_datetimes_are_an_error_as_in_memory(tmp_path, small_batches):
    # Batches of 300 rows: the first three hold numbers only, the rest datetimes only.
    rows = [f"{i // 3},{i % 5},{1_600_000_000 + i}" for i in range(900)]
    rows += [f"{i // 3},{i % 5},2020-09-13T12:{i % 60:02d}:00" for i in range(900, 2000)]
    (tmp_path / "log.csv").write_text("sid,item,ts\n" + "\n".join(rows) + "\n")
    options = ClickLogOptions(session_column="sid", item_column="item", time_column="ts")
    with pytest.raises(DataError, match="column 'ts'"):
        read_clicklog(tmp_path / "log.csv", None, options)
    with pytest.raises(DataError, match="column 'ts' holds numbers up to line 901 and datetimes in rows after it"):
        prepare_clicklog_out_of_core(tmp_path / "log.csv", tmp_path / "out", None, options, partitions=2)


def test_missing_category_error_names_the_first_items_in_file_order(tmp_path, shop_files):
    options = ClickLogOptions(**BASE, **CASES["days"], missing_category="error")
    log, items = shop_files / "log.parquet", shop_files / "items.parquet"
    with pytest.raises(DataError) as in_memory:
        read_clicklog(log, items, options)
    with pytest.raises(DataError) as out_of_core:
        prepare_clicklog_out_of_core(log, tmp_path / "out", items, options, partitions=3)
    assert str(out_of_core.value) == str(in_memory.value)


def test_no_test_session_left_is_the_same_error(tmp_path, shop_files):
    options = ClickLogOptions(**BASE, test_days=None, test_fraction=0.0001, min_item_support=1)
    with pytest.raises(DataError) as in_memory:
        read_clicklog(shop_files / "log.parquet", None, options)
    with pytest.raises(DataError) as out_of_core:
        prepare_clicklog_out_of_core(shop_files / "log.parquet", tmp_path / "out", None, options, partitions=2)
    assert str(out_of_core.value) == str(in_memory.value)


def test_sizes_and_the_automatic_choice(shop_files):
    assert parse_size("2GiB") == parse_size("2G") == 2 * 1024**3
    assert parse_size("512 MiB") == 512 * 1024**2 and parse_size("1500") == 1500 and parse_size("1.5k") == 1536
    with pytest.raises(ConfigError, match="memory size 'lots'"):
        parse_size("lots")
    with pytest.raises(ConfigError, match="give at least 1GiB"):
        prepare_clicklog_out_of_core(shop_files / "log.parquet", shop_files / "never", memory_limit=100 * 1024**2)
    assert not needs_out_of_core(shop_files / "log.parquet", 2 * 1024**3)
    assert needs_out_of_core(shop_files / "log.parquet", 100_000)


def test_cli_out_of_core_gives_the_in_memory_dataset(capsys, tmp_path, shop_files):
    args = ["data", "prepare", "--source", "clicklog", "-i", str(shop_files / "log.csv"), "--json"]
    args += ["--session-column", "sid", "--item-column", "item", "--time-column", "ts", "--min-item-support", "3"]
    summaries = []
    for extra in ([], ["--partitions", "3"], ["--out-of-core", "--memory-limit", "1GiB"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(tmp_path / f"ds{len(summaries)}"), *extra])
        assert exit_info.value.code == ExitStatus.OK
        summaries.append({k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "out"})
    assert summaries[0] == summaries[1] == summaries[2]
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--source", "synthetic", "--out", str(tmp_path / "s"), "--out-of-core"])
    assert exit_info.value.code == ExitStatus.CONFIG_ERROR
    assert "options for --source clicklog only, not synthetic: --out-of-core" in capsys.readouterr().err
