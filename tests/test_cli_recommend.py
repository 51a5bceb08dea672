import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hiersrec.cli import ExitStatus, main
from hiersrec.cli.recommend import _known_session_count, iter_session_chunks, recommend_file
from hiersrec.errors import DataError
from hiersrec.recommend import Recommender
from inference_support import trained_run

CLICKS_CSV = """session_id,item_id,timestamp
s1,i3,10
s1,i4,11
s2,i7,5
s2,i5,3
s2,i6,4
s3,nope,1
s4,i1,1
s4,i2,2
"""
EXPECTED = (["s1", "s2", "s3", "s4"], [["i3", "i4"], ["i5", "i6", "i7"], ["nope"], ["i1", "i2"]])


@pytest.fixture(scope="module")
def run_dir(tiny_shop):
    return trained_run(tiny_shop)


@pytest.fixture(scope="module")
def recommender(run_dir):
    return Recommender.from_artifact(run_dir)


def _collect(path, read_rows):
    ids, sessions = [], []
    for chunk_ids, chunk_sessions in iter_session_chunks(path, read_rows):
        ids += chunk_ids
        sessions += chunk_sessions
    return ids, sessions


@pytest.mark.parametrize("read_rows", [1, 2, 3, 1000])
def test_click_rows_are_grouped_across_chunks_and_ordered_by_time(tmp_path, read_rows):
    path = tmp_path / "clicks.csv"
    path.write_text(CLICKS_CSV)
    assert _collect(path, read_rows) == EXPECTED


def test_clicks_without_timestamp_keep_file_order_and_parquet_works(tmp_path):
    path = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"session_id": [7, 7, 8], "item_id": [3, 1, 2]}), path)
    assert _collect(path, 2) == (["7", "8"], [["3", "1"], ["2"]])


def test_session_rows_as_parquet_lists_and_csv_strings(tmp_path):
    parquet = tmp_path / "sessions.parquet"
    pq.write_table(pa.table({"session_id": ["a", "b"], "items": [["i1", "i2"], []]}), parquet)
    assert _collect(parquet, 1) == (["a", "b"], [["i1", "i2"], []])
    csv = tmp_path / "sessions.csv"
    csv.write_text('session_id,items\na,"i1, i2;i3"\nb,i4\n')
    assert _collect(csv, 1000) == (["a", "b"], [["i1", "i2", "i3"], ["i4"]])


def test_the_progress_bar_knows_the_session_count_of_one_row_per_session_parquet_only(tmp_path):
    sessions, clicks, csv = tmp_path / "sessions.parquet", tmp_path / "clicks.parquet", tmp_path / "s.csv"
    pq.write_table(pa.table({"session_id": ["a", "b", "c"], "items": [["1"], ["2"], []]}), sessions)
    pq.write_table(pa.table({"session_id": [7, 7, 8], "item_id": [3, 1, 2]}), clicks)
    csv.write_text("session_id,items\na,1\n")
    assert _known_session_count(sessions) == 3
    assert _known_session_count(clicks) is None  # clicks: sessions are only known once read
    assert _known_session_count(csv) is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "session,item\n1,2\n", "need columns session_id and item_id"),
        ("x.csv", "session_id,item_id\n1,\n", "empty item_id"),
        ("x.json", "{}", "unsupported file type"),
        ("x.csv", "", "cannot read"),
    ],
)
def test_unreadable_inputs_are_data_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        _collect(path, 10)


def test_recommend_file_matches_one_by_one_and_ignores_chunking(tmp_path, recommender):
    path = tmp_path / "clicks.csv"
    path.write_text(CLICKS_CSV)
    outputs = []
    for read_rows in (2, 1000):
        output = tmp_path / f"recs-{read_rows}.parquet"
        assert recommend_file(recommender, path, output, k=4, read_rows=read_rows) == 4
        outputs.append(pq.read_table(output).to_pylist())
        assert not list(tmp_path.glob(".*partial"))
    assert outputs[0] == outputs[1]
    rows = outputs[0]
    assert [row["session_id"] for row in rows] == EXPECTED[0]
    for row, session in zip(rows, EXPECTED[1], strict=True):
        alone = recommender.recommend(session, k=4)
        assert row["item_ids"] == list(alone.item_ids) and row["category_ids"] == list(alone.category_ids)
        assert row["scores"] == pytest.approx(alone.scores)
    assert rows[2]["fallback"] == "popularity" and rows[2]["unknown_items"] == ["nope"] and len(rows[2]["item_ids"]) > 0
    assert rows[0]["fallback"] is None


def test_a_failed_run_leaves_no_output(tmp_path, recommender):
    path = tmp_path / "bad.csv"
    path.write_text("session_id,item_id\n1,2\n2,\n")
    output = tmp_path / "recs.parquet"
    with pytest.raises(DataError):
        recommend_file(recommender, path, output)
    assert not output.exists() and not list(tmp_path.glob(".*partial"))


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_one_session_as_json_and_as_a_table(run_dir, capsys, recommender):
    code, out, _ = _run(["recommend", str(run_dir), "--session", "i3, i4,zz", "-k", "3", "--json"], capsys)
    payload = json.loads(out)
    expected = recommender.recommend(["i3", "i4", "zz"], k=3)
    assert code == ExitStatus.OK and payload["item_ids"] == list(expected.item_ids)
    assert payload["unknown_items"] == ["zz"] and payload["fallback"] is None
    code, out, err = _run(["recommend", str(run_dir), "--session", "zz", "-k", "2"], capsys)
    # header line + k = 2 popularity rows
    assert code == ExitStatus.OK and "fallback 'popularity'" in err and len(out.strip().splitlines()) == 3


def test_cli_file_mode(run_dir, tmp_path, capsys):
    path = tmp_path / "clicks.csv"
    path.write_text(CLICKS_CSV)
    output = tmp_path / "out" / "recs.parquet"
    code, out, _ = _run(["recommend", str(run_dir), "-i", str(path), "-o", str(output), "-k", "5"], capsys)
    assert code == ExitStatus.OK and "4 sessions" in out
    assert pq.read_table(output).num_rows == 4 and len(pq.read_table(output)["item_ids"][0]) == 5


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ([], ExitStatus.CONFIG_ERROR, "either --session"),
        (["--session", "i1", "--input", "x.csv"], ExitStatus.CONFIG_ERROR, "either --session"),
        (["--input", "x.csv"], ExitStatus.CONFIG_ERROR, "--output"),
        (["--session", "i1", "--candidate-budget", "lots"], ExitStatus.CONFIG_ERROR, "candidate budget"),
        (["--input", "x.csv", "--output", "."], ExitStatus.CONFIG_ERROR, "is a folder"),
        # issue 9: an OverflowError traceback before
        (["--session", "i1", "--candidate-budget", "category:99999999999999999999"], ExitStatus.CONFIG_ERROR, "digit"),
    ],
)
def test_cli_usage_errors_have_exit_codes(run_dir, capsys, args, status, message):
    code, _, err = _run(["recommend", str(run_dir), *args], capsys)
    assert code == status and message in err


def test_cli_missing_run_is_an_artifact_error(tmp_path, capsys):
    code, _, err = _run(["recommend", str(tmp_path / "nothing"), "--session", "i1"], capsys)
    assert code == ExitStatus.ARTIFACT_ERROR and "no such run directory" in err and "--resume" not in err


def test_cli_bad_input_file_is_a_data_error(run_dir, tmp_path, capsys):
    path = tmp_path / "clicks.csv"
    path.write_text("user,item\n1,2\n")
    code, _, err = _run(["recommend", str(run_dir), "-i", str(path), "-o", str(tmp_path / "o.parquet")], capsys)
    assert code == ExitStatus.DATA_ERROR and "session_id" in err
