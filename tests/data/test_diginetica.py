"""Raw DIGINETICA with the SR-GNN recipe, on raw-format files with hand-checked expectations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from hiersrec.data.ingest.diginetica import read_diginetica, read_items
from hiersrec.errors import DataError

HEADER = "sessionId;userId;itemId;timeframe;eventdate"
# (session, item, timeframe, date) in file order. Hand-checked walk through the SR-GNN recipe:
# * session dates = date of each session's last row: s7 -> 05-26 although its first rows say 05-24;
# * clicks by timeframe, ties in file order: s1 = [10, 12, 11] (10 and 12 both at 100 ms);
# * s2 has one click: dropped first, so item 20 keeps 4 clicks (s5, s3, s6, s8) < 5 and is filtered out;
#   30 has 5 clicks, 10, 11, 12 have 6 each; s5 = [12, 20] -> [12] is then too short;
# * max date 06-01, split 05-25: s8 (05-25) is in neither set; train = s1 (05-01), s4, s3 (05-03, s4 first in
#   the file), s6 (05-10); test = s7 (05-26), s10 (05-28), s9 (06-01);
# * items by first appearance in train: 10 -> 1, 12 -> 2, 11 -> 3;
# * test drops item 30 (never in train): s7 [10, 30, 11] -> [1, 3], s10 [30, 30, 12, 10] -> [2, 1],
#   s9 [30, 30, 12] -> [12] is too short.
CLICKS = [
    (1, 11, 300, "2016-05-01"),
    (1, 10, 100, "2016-05-01"),
    (1, 12, 100, "2016-05-01"),
    (2, 20, 0, "2016-05-02"),
    (5, 12, 0, "2016-05-03"),
    (5, 20, 5, "2016-05-03"),
    (4, 10, 0, "2016-05-03"),
    (4, 11, 1, "2016-05-03"),
    (4, 10, 2, "2016-05-03"),
    (3, 11, 0, "2016-05-03"),
    (3, 20, 1, "2016-05-03"),
    (3, 12, 2, "2016-05-03"),
    (6, 12, 0, "2016-05-10"),
    (6, 20, 1, "2016-05-10"),
    (6, 11, 2, "2016-05-10"),
    (7, 10, 0, "2016-05-24"),
    (7, 30, 1, "2016-05-24"),
    (7, 11, 2, "2016-05-26"),
    (8, 10, 0, "2016-05-25"),
    (8, 11, 1, "2016-05-25"),
    (8, 20, 2, "2016-05-25"),
    (9, 30, 0, "2016-06-01"),
    (9, 30, 1, "2016-06-01"),
    (9, 12, 2, "2016-06-01"),
    (10, 30, 0, "2016-05-28"),
    (10, 30, 1, "2016-05-28"),
    (10, 12, 2, "2016-05-28"),
    (10, 10, 3, "2016-05-28"),
]
CATEGORIES = {10: 100, 11: 200, 12: 100, 20: 300, 30: 200}


def write_raw(directory: Path, clicks=CLICKS, categories=CATEGORIES, header=HEADER, products: str | None = None):
    directory.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{s};NA;{i};{t};{d}" for s, i, t, d in clicks]
    (directory / "train-item-views.csv").write_text("\n".join(lines) + "\n")
    rows = "".join(f"{i};{c}\n" for i, c in categories.items())
    (directory / "product-categories.csv").write_text("itemId;categoryId\n" + rows)
    if products is not None:
        (directory / "products.csv").write_text(products)
    return directory


def midnight(date: str) -> int:
    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp())


def test_srgnn_recipe_on_hand_checked_log(tmp_path):
    data = read_diginetica(write_raw(tmp_path))
    assert data.train.to_lists() == [[1, 2, 3], [1, 3, 1], [3, 2], [2, 3]]
    assert data.test.to_lists() == [[1, 3], [2, 1]]
    assert data.vocab.item_ids == ("<pad>", "10", "12", "11")
    assert data.vocab.category_ids == ("<pad>", "100", "200")
    assert data.catalog.item_category.tolist() == [0, 1, 1, 2]
    # Click time = session date + timeframe ms; s1's first click is at 100 ms.
    assert data.train.timestamps[:3].tolist() == [midnight("2016-05-01")] * 3
    assert data.test.timestamps[0] == midnight("2016-05-26")
    assert [(s["step"], s["clicks"], s["sessions"]) for s in data.provenance["steps"]] == [
        ("read", 28, 10),
        ("filtered", 22, 8),
        ("train", 10, 4),
        ("test", 4, 2),
    ]
    assert data.options["items_without_category_unknown"] == 0


def test_snake_case_header_and_products_file(tmp_path):
    products = "itemId;pricelog2;product.name.tokens\n10;3.5;4,8,15\n12;NA;16\n11;1;23,42\n"
    data = read_diginetica(
        write_raw(tmp_path, header="session_id;user_id;item_id;timeframe;eventdate", products=products)
    )
    assert data.train.to_lists() == [[1, 2, 3], [1, 3, 1], [3, 2], [2, 3]]
    assert data.catalog.text == ("", "4 8 15", "16", "23 42")
    np.testing.assert_array_equal(data.catalog.numeric["pricelog2"], [np.nan, 3.5, np.nan, 1.0])


def test_missing_category_policies(tmp_path):
    no_11 = {k: v for k, v in CATEGORIES.items() if k != 11}
    directory = write_raw(tmp_path, categories=no_11)
    unknown = read_diginetica(directory)
    assert unknown.train.to_lists() == [[1, 2, 3], [1, 3, 1], [3, 2], [2, 3]]
    assert unknown.vocab.category_ids == ("<pad>", "100", "unknown")
    assert unknown.catalog.item_category.tolist() == [0, 1, 1, 2]
    assert unknown.options["items_without_category_unknown"] == 1
    # Dropping 11's clicks first changes the whole walk (hand-checked): 20 is left with 4 clicks again;
    # train = s1 [10, 12], s4 [10, 10]; test = s10 [12, 10] only (s7 -> [10], s9 -> [12] too short).
    dropped = read_diginetica(directory, missing_category="drop")
    assert dropped.train.to_lists() == [[1, 2], [1, 1]]
    assert dropped.test.to_lists() == [[2, 1]]
    assert dropped.options["items_without_category_dropped"] == 1
    assert dropped.options["clicks_dropped"] == 6
    with pytest.raises(DataError, match=r"1 clicked items have no category \(first: \['11'\]\).*'unknown'.*'drop'"):
        read_diginetica(directory, missing_category="error")


def test_bad_raw_files_name_the_file_column_and_line(tmp_path):
    write_raw(tmp_path / "cols", header="sessionId;userId;item;timeframe;eventdate")
    with pytest.raises(DataError, match=r"train-item-views.csv: missing column\(s\) \['itemId'\]; found \[.*'item'"):
        read_diginetica(tmp_path / "cols")
    bad = list(CLICKS)
    bad[4] = (5, 12, "soon", "2016-05-03")
    write_raw(tmp_path / "value", clicks=bad)
    with pytest.raises(DataError, match="line 6: column 'timeframe' has 'soon', expected a whole number"):
        read_diginetica(tmp_path / "value")
    bad[4] = (5, 12, 0, "03/05/2016")
    write_raw(tmp_path / "date", clicks=bad)
    with pytest.raises(DataError, match="line 6: column 'eventdate' has '03/05/2016'"):
        read_diginetica(tmp_path / "date")
    (tmp_path / "value" / "train-item-views.csv").write_text("")
    with pytest.raises(DataError, match="train-item-views.csv: the file is empty"):
        read_diginetica(tmp_path / "value")
    (write_raw(tmp_path / "nocat") / "product-categories.csv").unlink()
    with pytest.raises(DataError, match="product-categories.csv: file not found"):
        read_diginetica(tmp_path / "nocat")


def test_no_session_left_is_a_data_error(tmp_path):
    few = [(s, i, t, d) for s, i, t, d in CLICKS if i != 10 and i != 11]  # 12 and 30 alone, 30 now rare
    with pytest.raises(DataError, match="no (train |test )?session left after filtering"):
        read_diginetica(write_raw(tmp_path, clicks=few))


def _reference_recipe(clicks):
    """A plain-Python, loop-by-loop statement of the SR-GNN recipe (the module docstring), as a test oracle."""
    order, by_session, date_of = [], {}, {}
    for session, item, timeframe, date in clicks:
        if session not in by_session:
            order.append(session)
            by_session[session] = []
        by_session[session].append((timeframe, len(by_session[session]), item))
        date_of[session] = midnight(date)  # the last row of the session wins
    seqs = {s: [item for _, _, item in sorted(by_session[s])] for s in order}
    seqs = {s: seq for s, seq in seqs.items() if len(seq) > 1}
    support: dict[int, int] = {}
    for seq in seqs.values():
        for item in seq:
            support[item] = support.get(item, 0) + 1
    seqs = {s: [i for i in seq if support[i] >= 5] for s, seq in seqs.items()}
    seqs = {s: seq for s, seq in seqs.items() if len(seq) >= 2}
    split = max(date_of[s] for s in seqs) - 7 * 86_400
    by_date = sorted(seqs, key=lambda s: date_of[s])  # stable: first appearance breaks ties
    index: dict[int, int] = {}
    train = []
    for s in (s for s in by_date if date_of[s] < split):
        train.append([index.setdefault(i, len(index) + 1) for i in seqs[s]])
    test = [[index[i] for i in seqs[s] if i in index] for s in by_date if date_of[s] > split]
    return train, [seq for seq in test if len(seq) >= 2]


@pytest.mark.parametrize("seed", range(4))
def test_matches_a_plain_python_statement_of_the_recipe_on_random_logs(tmp_path, seed):
    rng = np.random.default_rng(seed)
    clicks = []
    for session in rng.permutation(400):
        day = int(rng.integers(0, 30))
        for _ in range(int(rng.integers(1, 6))):
            # Late clicks of a session may carry the next day's date; timeframes repeat to exercise ties.
            date = dt.date(2016, 5, 1) + dt.timedelta(days=day + int(rng.random() < 0.1))
            clicks.append((int(session), int(rng.zipf(1.6) % 60), int(rng.integers(0, 5)), date.isoformat()))
    # Interleave a few sessions' rows (non-contiguous sessions in the file).
    clicks[10], clicks[200] = clicks[200], clicks[10]
    categories = {i: i % 7 for i in range(60)}
    data = read_diginetica(write_raw(tmp_path, clicks=clicks, categories=categories))
    train, test = _reference_recipe(clicks)
    assert data.train.to_lists() == train
    assert data.test.to_lists() == test
    assert len(train) > 50 and len(test) > 5


@pytest.mark.data
def test_real_product_categories_file_loads(shared_data):
    raw = shared_data / "diginetica" / "raw"
    items = read_items(raw / "product-categories.csv", raw / "products.csv")
    assert items.height == 184_047
    assert items["category"].n_unique() == 1_217
    assert items["category"].null_count() == 0
