"""Issue 9, nothing crashes: bad input to every importer of ``hiersrec data prepare``, table-driven.

Each case writes a small, otherwise valid source with one defect, runs ``hiersrec data prepare`` in-process
onto an --out that already holds a good prepared dataset, and expects: the exit code of the error's class,
exactly one line on stderr (``error: ...``) naming the file and its row or field, no traceback, and the
good --out untouched with nothing left beside it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hiersrec.cli import ExitStatus, main
from hiersrec.data.storage import load_prepared, save_prepared

# Valid sources, one per importer; a case changes one file.
CLICKLOG = {
    "log.csv": "sid,pid,ts\n"
    + "".join(f"{s},{item},{1_600_000_000 + s * 3_600 + k}\n" for s in range(12) for k, item in enumerate("abc")),
    "items.csv": "pid,cat\na,x\nb,y\nc,x\n",
}
CLICKLOG_ARGS = ["-i", "log.csv", "--items", "items.csv", "--session-column", "sid", "--item-column", "pid"]
CLICKLOG_ARGS += ["--time-column", "ts", "--item-id-column", "pid", "--category-column", "cat"]
DIGINETICA = {
    "train-item-views.csv": "sessionId;userId;itemId;timeframe;eventdate\n"
    + "".join(f"{s};;{item};{k * 1000};2016-01-{s:02d}\n" for s in range(1, 13) for k, item in enumerate((7, 8, 9))),
    "product-categories.csv": "itemId;categoryId\n7;1\n8;1\n9;2\n",
}
SRGNN = {
    "train_sessions.tsv": "session_idx\titem_ids\n0\t1 2 3\n1\t2 3\n",
    "test_sessions.tsv": "session_idx\titem_ids\n0\t3 1\n",
    "item_category.tsv": "item_id\tcategory_id\n1\t10\n2\t10\n3\t11\n",
}
RECBOLE = {
    "shop.inter": "session_id:token\titem_id:token\ttimestamp:float\n"
    + "".join(f"u{u}\t{item}\t{100 * u + k}\n" for u in range(4) for k, item in enumerate("abcd")),
    "shop.item": "item_id:token\tcategory:token\tgenre:token_seq\na\tx\tpop rock\nb\ty\tjazz\nc\tx\tpop\nd\ty\t\n",
}
SOURCES = {"clicklog": (CLICKLOG, CLICKLOG_ARGS), "diginetica": (DIGINETICA, []), "srgnn": (SRGNN, [])}
SOURCES |= {"recbole": (RECBOLE, []), "synthetic": ({}, [])}


def _parquet(**columns: pa.Array) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.Table.from_arrays(list(columns.values()), names=list(columns)), path)


def _with_names(names: list[str], *arrays: pa.Array) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.Table.from_arrays(list(arrays), names=names), path)


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


LOG, ITEMS = CLICKLOG["log.csv"], CLICKLOG["items.csv"]
VIEWS = DIGINETICA["train-item-views.csv"]
FIRST_CLICK = "0,a,1600000000\n"
STAMPS = pa.array([1.6e9, 1.6e9 + 1, float("nan"), 1.6e9 + 3])


@dataclass
class Case:
    """One defect: the files it changes (or adds), extra arguments, the expected exit and message parts."""

    source: str
    name: str
    files: dict[str, str | bytes | Callable[[Path], None] | None]
    args: list[str]
    code: ExitStatus
    message: tuple[str, ...]
    absent: tuple[str, ...] = field(default=())  # what the message must not say


DATA, CONFIG, ARTIFACT = ExitStatus.DATA_ERROR, ExitStatus.CONFIG_ERROR, ExitStatus.ARTIFACT_ERROR
# The table reads best one case to a line or two, as written.
# fmt: off
CLICK_PARQUET = ["-i", "log.parquet", "--session-column", "sid", "--item-column", "pid", "--time-column", "ts"]
CASES = [
    # -- click log: times
    Case("clicklog", "nan-time", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,nan\n")}, [], DATA,
         ("log.csv: line 2: column 'ts' has 'nan', expected a finite time",)),
    Case("clicklog", "inf-time", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,inf\n")}, [], DATA,
         ("log.csv: line 2: column 'ts' has 'inf'", "between the years 1 and 9999")),
    Case("clicklog", "huge-time", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,1e30\n")}, [], DATA,
         ("log.csv: line 2: column 'ts' has '1e30'",)),
    Case("clicklog", "milliseconds-read-as-seconds", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,1600000000000\n")},
         [], DATA, ("log.csv: line 2:", "numbers count seconds since 1970")),
    Case("clicklog", "empty-time", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,\n")}, [], DATA,
         ("log.csv: line 2: column 'ts' is empty",)),
    Case("clicklog", "mixed-time-types", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,2020-09-13\n")}, [], DATA,
         ("log.csv: line 2: column 'ts' has '2020-09-13', expected a number",)),
    Case("clicklog", "parquet-nan-time", {"log.parquet": _parquet(
        sid=pa.array(["s", "s", "t", "t"]), pid=pa.array(list("abab")), ts=STAMPS)}, CLICK_PARQUET, DATA,
         ("log.parquet: row 3: column 'ts' is empty",)),
    # -- click log: ids, header and layout
    Case("clicklog", "empty-session", {"log.csv": _replace(LOG, FIRST_CLICK, ",a,1600000000\n")}, [], DATA,
         ("log.csv: line 2: column 'sid' is empty",)),
    Case("clicklog", "blank-item", {"log.csv": _replace(LOG, FIRST_CLICK, "0, ,1600000000\n")}, [], DATA,
         ("log.csv: line 2: column 'pid' is empty",)),
    Case("clicklog", "duplicate-header", {"log.csv": _replace(LOG, "sid,pid,ts\n", "sid,pid,pid\n")}, [], DATA,
         ("log.csv: line 1: the header names column 'pid' 2 times",)),
    Case("clicklog", "extra-field", {"log.csv": _replace(LOG, FIRST_CLICK, "0,a,1600000000,x\n")}, [], DATA,
         ("log.csv: line 2: 4 fields where the header has 3",)),
    Case("clicklog", "latin-1", {"log.csv": _replace(LOG, FIRST_CLICK, "0,\xe9,1600000000\n").encode("latin-1")}, [],
         DATA, ("log.csv: line 2: byte 0xe9", "read as UTF-8"), absent=("--", "option")),
    Case("clicklog", "unclosed-quote", {"log.csv": _replace(LOG, FIRST_CLICK, '0,"a,1600000000\n')}, [], DATA,
         ("log.csv: line 2: a quote", "does not close"), absent=("1600039602",)),
    Case("clicklog", "list-column", {"log.parquet": _parquet(
        sid=pa.array(["s", "s"]), pid=pa.array([["a"], ["b"]]), ts=pa.array([1.6e9, 1.6e9 + 1]))}, CLICK_PARQUET,
         DATA, ("log.parquet: column 'pid' holds List(String) values",)),
    Case("clicklog", "parquet-duplicate-column", {"log.parquet": _with_names(
        ["sid", "pid", "ts", "pid"], pa.array(["s"]), pa.array(["a"]), pa.array([1.6e9]), pa.array(["b"]))},
         CLICK_PARQUET, DATA, ("log.parquet: the header names column 'pid' 2 times",)),
    Case("clicklog", "not-parquet", {"log.parquet": LOG}, CLICK_PARQUET, DATA,
         ("log.parquet: cannot be read as a Parquet file",)),
    Case("clicklog", "missing-file", {"log.csv": None}, [], DATA, ("log.csv: file not found",)),
    Case("clicklog", "empty-category-with-error-policy", {"items.csv": "pid,cat\na,x\nb,\nc,x\n"},
         ["--missing-category", "error"], DATA, ("log.csv: 1 clicked items have no category (first: ['b'])",)),
    Case("clicklog", "item-twice-in-item-table", {"items.csv": ITEMS + "a,y\n"}, [], DATA,
         ("items.csv: item 'a' has 2 different rows",)),
    # -- click log: options
    Case("clicklog", "two-byte-separator", {}, ["--separator", ";;"], CONFIG, ("field separator ';;'",)),
    Case("clicklog", "empty-separator", {}, ["--separator", ""], CONFIG, ("field separator ''",)),
    Case("clicklog", "quote-separator", {}, ["--separator", '"'], CONFIG, ("field separator '\"'",)),
    Case("clicklog", "nan-test-days", {}, ["--test-days", "nan"], CONFIG, ("test_days must be a finite number",)),
    Case("clicklog", "inf-test-days", {}, ["--test-days", "inf"], CONFIG, ("test_days", "inf")),
    Case("clicklog", "nan-test-fraction", {}, ["--test-fraction", "nan"], CONFIG, ("test_fraction", "nan")),
    Case("clicklog", "zero-support", {}, ["--min-item-support", "0"], CONFIG, ("min_item_support",)),
    Case("clicklog", "same-column-twice", {}, ["--time-column", "pid"], CONFIG, ("must differ", "'pid'")),
    Case("clicklog", "out-under-a-file", {"somefile.txt": "x"}, ["--out", "somefile.txt/sub"], ARTIFACT,
         ("somefile.txt is a file",)),
    # -- DIGINETICA
    Case("diginetica", "empty-session", {"train-item-views.csv": _replace(VIEWS, "1;;7;", ";;7;")}, [], DATA,
         ("train-item-views.csv: line 2: column 'sessionId' is empty",)),
    Case("diginetica", "empty-item", {"train-item-views.csv": _replace(VIEWS, "1;;7;", "1;;;")}, [], DATA,
         ("train-item-views.csv: line 2: column 'itemId' is empty",)),
    Case("diginetica", "empty-category-item", {"product-categories.csv": "itemId;categoryId\n7;1\n;1\n9;2\n"}, [],
         DATA, ("product-categories.csv: line 3: column 'itemId' is empty",)),
    Case("diginetica", "bad-date", {"train-item-views.csv": _replace(VIEWS, "2016-01-01", "2016-13-01")}, [], DATA,
         ("train-item-views.csv: line 2: column 'eventdate' has '2016-13-01'",)),
    Case("diginetica", "bad-timeframe", {"train-item-views.csv": _replace(VIEWS, ";0;", ";soon;")}, [], DATA,
         ("train-item-views.csv: line 2: column 'timeframe' has 'soon', expected a whole number",)),
    Case("diginetica", "latin-1-categories",
         {"product-categories.csv": "itemId;categoryId\n7;\xe9\n".encode("latin-1")}, [], DATA,
         ("product-categories.csv: line 2: byte 0xe9",)),
    Case("diginetica", "no-categories", {"product-categories.csv": None}, [], DATA,
         ("product-categories.csv: file not found",)),
    # -- SR-GNN
    Case("srgnn", "empty-category", {"item_category.tsv": "item_id\tcategory_id\n1\t10\n2\t\n3\t11\n"}, [], DATA,
         ("item_category.tsv: line 3: column 'category_id' is empty",)),
    Case("srgnn", "item-twice", {"item_category.tsv": SRGNN["item_category.tsv"] + "1\t11\n"}, [], DATA,
         ("item_category.tsv: item '1' has 2 different rows",)),
    Case("srgnn", "empty-session", {"train_sessions.tsv": "session_idx\titem_ids\n0\t1 2 3\n1\t\n"}, [], DATA,
         ("train_sessions.tsv: line 3: column 'item_ids' is empty",)),
    Case("srgnn", "extra-field", {"test_sessions.tsv": "session_idx\titem_ids\n0\t3 1\tx\n"}, [], DATA,
         ("test_sessions.tsv: line 2: 3 fields where the header has 2",)),
    Case("srgnn", "latin-1", {"item_category.tsv": "item_id\tcategory_id\n1\t\xe9\n".encode("latin-1")}, [], DATA,
         ("item_category.tsv: line 2: byte 0xe9",)),
    # -- RecBole
    Case("recbole", "field-twice", {"shop.inter": RECBOLE["shop.inter"].replace(
        "timestamp:float", "item_id:float", 1)}, [], DATA,
         ("shop.inter: line 1: the header names the field 'item_id' twice",)),
    Case("recbole", "nan-time", {"shop.inter": _replace(RECBOLE["shop.inter"], "u0\ta\t0\n", "u0\ta\tnan\n")}, [],
         DATA, ("shop.inter: line 2: column 'timestamp:float' has 'nan'",)),
    Case("recbole", "empty-session", {"shop.inter": _replace(RECBOLE["shop.inter"], "u0\ta\t0\n", "\ta\t0\n")}, [],
         DATA, ("shop.inter: line 2: column 'session_id:token' is empty",)),
    Case("recbole", "extra-field", {"shop.item": RECBOLE["shop.item"] + "e\tx\tpop\tmore\n"}, [], DATA,
         ("shop.item: line 6: 4 fields where the header has 3",)),
    Case("recbole", "drop-policy", {}, ["--missing-category", "drop"], DATA, ("'drop' does not apply",)),
    Case("recbole", "no-such-category-field", {}, ["--category-column", "colour"], DATA,
         ("shop.item: no field 'colour' to take categories from",)),
    Case("recbole", "float-category-field", {"shop.item": "item_id:token\tprice:float\na\t1.5\n"},
         ["--category-column", "price"], DATA, ("shop.item: the category field 'price:float' is not a token",)),
    Case("recbole", "amazon-folder-category", {"shop.train.inter": "", "item_meta_derived.tsv": ""},
         ["--category-column", "genre"], CONFIG, ("--category-column does not apply to", "category_l2")),
    # -- synthetic
    Case("synthetic", "negative-seed", {}, ["--seed", "-1"], CONFIG, ("seed must be >= 0, got -1",)),
]
# fmt: on


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory, tiny_shop) -> Path:
    return save_prepared(tiny_shop, tmp_path_factory.mktemp("good") / "ds")


def _write_source(folder: Path, source: str, changes: dict) -> list[str]:
    files, args = SOURCES[source]
    folder.mkdir()
    for name, content in {**files, **changes}.items():
        path = folder / name
        if content is None:
            continue
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return ["-i", "."] if source in ("diginetica", "srgnn", "recbole") else list(args)


def _run_prepare(capsys, monkeypatch, folder: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(folder)  # file names in the messages are then the names the user typed
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[f"{c.source}-{c.name}" for c in CASES])
def test_bad_input_is_one_line_naming_file_and_row_and_leaves_out_untouched_issue_9(
    case, tmp_path, capsys, monkeypatch, good_dataset
):
    out = tmp_path / "out"
    shutil.copytree(good_dataset, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    source_args = _write_source(tmp_path / "in", case.source, case.files)
    out_args = [] if "--out" in case.args else ["--out", "../out"]
    args = ["--source", case.source, *source_args, *out_args, *case.args]
    code, stdout, stderr = _run_prepare(capsys, monkeypatch, tmp_path / "in", *args)
    assert code == case.code, stderr
    assert "Traceback" not in stdout + stderr and stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for part in case.message:
        assert part in lines[0], (part, lines[0])
    for part in case.absent:
        assert part not in lines[0], (part, lines[0])
    assert len(lines[0]) < 400
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    assert not [p.name for p in (tmp_path / "in").iterdir() if p.name.startswith(".")]  # no lock, no temporary


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_unchanged_sources_prepare_fine(source, tmp_path, capsys, monkeypatch, good_dataset):
    """The control: without its defect each source is valid, so every case above fails for its defect only."""
    shutil.copytree(good_dataset, tmp_path / "out")
    source_args = _write_source(tmp_path / "in", source, {})
    extra = ["--test-fraction", "0.25"] if source == "clicklog" else []
    args = ["--source", source, *source_args, "--out", "../out", *extra]
    code, _, stderr = _run_prepare(capsys, monkeypatch, tmp_path / "in", *args)
    assert code == ExitStatus.OK, stderr
    assert load_prepared(tmp_path / "out").vocab.n_items >= 3


def test_click_log_sessions_are_grouped_by_id_whatever_the_row_order_issue_9(tmp_path, capsys, monkeypatch):
    rows = LOG.splitlines(keepends=True)
    header, clicks = rows[0], rows[1:]
    # Interleave every session with the next one: no session's rows are contiguous in the file.
    shuffled = clicks[0::3] + clicks[2::3] + clicks[1::3]
    _write_source(tmp_path / "in", "clicklog", {"log.csv": header + "".join(reversed(shuffled))})
    args = ["--source", "clicklog", *CLICKLOG_ARGS, "--test-fraction", "0.25", "--out", "../out"]
    code, _, stderr = _run_prepare(capsys, monkeypatch, tmp_path / "in", *args)
    assert code == ExitStatus.OK, stderr
    data = load_prepared(tmp_path / "out")
    assert data.train.n_sessions + data.test.n_sessions == 12  # each id once, not once per block of rows
    assert {tuple(s) for s in data.train.to_lists() + data.test.to_lists()} == {(1, 2, 3)}


def test_a_tab_separator_may_be_typed_as_backslash_t(tmp_path, capsys, monkeypatch):
    _write_source(tmp_path / "in", "clicklog", {name: text.replace(",", "\t") for name, text in CLICKLOG.items()})
    args = ["--source", "clicklog", *CLICKLOG_ARGS, "--separator", "\\t", "--test-fraction", "0.25", "--out", "o"]
    code, _, stderr = _run_prepare(capsys, monkeypatch, tmp_path / "in", *args)
    assert code == ExitStatus.OK, stderr
