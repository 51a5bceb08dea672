"""``hiersrec data prepare | stats | export`` through the real entry point: output, JSON and exit codes."""

from __future__ import annotations

import json

import pytest

from hiersrec.cli import ExitStatus, main

# A click log with SR-GNN defaults in mind: every item has >= 5 clicks; the last day is the test period.
LOG = "sid,pid,ts\n" + "".join(
    f"{s},{item},{1_600_000_000 + s * 3_600 + k}\n" for s in range(12) for k, item in enumerate(("a", "b", "c"))
)
ITEMS = "pid,cat\na,x\nb,y\nc,x\n"
CLICKLOG_ARGS = ["--session-column", "sid", "--item-column", "pid", "--time-column", "ts"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def log_files(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    (tmp_path / "items.csv").write_text(ITEMS)
    return tmp_path / "log.csv", tmp_path / "items.csv"


def test_prepare_clicklog_then_stats(capsys, tmp_path, log_files):
    args = ["prepare", "--source", "clicklog", "-i", str(log_files[0]), "--items", str(log_files[1])]
    args += [*CLICKLOG_ARGS, "--item-id-column", "pid", "--category-column", "cat", "--test-fraction", "0.25"]
    code, out, err = run(capsys, *args, "--out", str(tmp_path / "ds"), "--json")
    assert code == ExitStatus.OK, err
    summary = json.loads(out)
    assert summary["out"] == str(tmp_path / "ds")
    assert summary["train"]["sessions"] == 9 and summary["test"]["sessions"] == 3
    assert summary["items"] == 3 and summary["categories"] == 2
    assert summary["train"]["prefixes"] == 18
    # a -> b -> c: one of two transitions stays in category x? No: x, y, x changes category every step.
    assert summary["train"]["next_same_category_rate"] == 0.0
    code, out, _ = run(capsys, "stats", str(tmp_path / "ds"), "--json")
    assert code == ExitStatus.OK
    stats = json.loads(out)
    assert stats["fingerprint"] == summary["fingerprint"] and len(stats["fingerprint"]) == 64
    code, out, _ = run(capsys, "stats", str(tmp_path / "ds"))
    assert code == ExitStatus.OK and "items: 3" in out.splitlines()


def test_missing_column_exits_3_and_names_it(capsys, tmp_path, log_files):
    args = ["prepare", "--source", "clicklog", "-i", str(log_files[0]), "--out", str(tmp_path / "ds")]
    code, out, err = run(capsys, *args, "--session-column", "session", "--item-column", "pid", "--time-column", "ts")
    assert code == ExitStatus.DATA_ERROR == 3
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "missing column(s) ['session']; found ['sid', 'pid', 'ts']" in err and "--session-column" in err
    assert not (tmp_path / "ds").exists()


def test_unparsable_time_exits_3_with_its_line(capsys, tmp_path):
    (tmp_path / "log.csv").write_text(LOG.replace(",1600000000\n", ",noon\n", 1))
    args = ["prepare", "--source", "clicklog", "-i", str(tmp_path / "log.csv"), "--out", str(tmp_path / "ds")]
    code, _, err = run(capsys, *args, *CLICKLOG_ARGS)
    assert code == ExitStatus.DATA_ERROR
    assert "line 2: column 'ts' has 'noon'" in err


def test_option_of_another_source_exits_4(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "prepare",
        "--source",
        "srgnn",
        "-i",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--min-item-support",
        "3",
    )
    assert code == ExitStatus.CONFIG_ERROR
    assert "--min-item-support" in err and "clicklog" in err
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(tmp_path / "o"), "-i", str(tmp_path))
    assert code == ExitStatus.CONFIG_ERROR and "--input" in err


def test_unknown_source_is_a_usage_error(capsys, tmp_path):
    code, _, _ = run(capsys, "prepare", "--source", "csv", "--out", str(tmp_path / "o"))
    assert code == ExitStatus.USAGE


def test_stats_of_a_missing_dataset_exits_3(capsys, tmp_path):
    code, _, err = run(capsys, "stats", str(tmp_path / "nothing"))
    assert code == ExitStatus.DATA_ERROR and "not found" in err


def test_prepare_refuses_to_replace_a_foreign_folder(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(tmp_path / "mine"))
    assert code == ExitStatus.ARTIFACT_ERROR and "not a prepared dataset" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_synthetic_prepare_export_and_reimport(capsys, tmp_path):
    code, out, _ = run(
        capsys, "prepare", "--source", "synthetic", "--seed", "3", "--out", str(tmp_path / "syn"), "--json"
    )
    assert code == ExitStatus.OK
    prepared = json.loads(out)
    assert prepared["items"] == 2000 and prepared["train"]["sessions"] == 18000
    code, out, _ = run(
        capsys,
        "export",
        str(tmp_path / "syn"),
        "--format",
        "recbole",
        "--out",
        str(tmp_path / "rb" / "synthetic"),
        "--json",
    )
    assert code == ExitStatus.OK
    files = json.loads(out)["files"]
    assert [f.rsplit("/", 1)[1] for f in files][:3] == [
        "synthetic.train.inter",
        "synthetic.valid.inter",
        "synthetic.test.inter",
    ]
    code, out, err = run(
        capsys,
        "prepare",
        "--source",
        "recbole",
        "-i",
        str(tmp_path / "rb" / "synthetic"),
        "--out",
        str(tmp_path / "back"),
        "--json",
    )
    assert code == ExitStatus.OK, err
    back = json.loads(out)
    for split in ("train", "test"):
        assert back[split]["sessions"] == prepared[split]["sessions"]
        assert back[split]["clicks"] == prepared[split]["clicks"]
    code, _, err = run(
        capsys,
        "prepare",
        "--source",
        "recbole",
        "-i",
        str(tmp_path / "rb" / "synthetic"),
        "--out",
        str(tmp_path / "x"),
        "--missing-category",
        "drop",
    )
    assert code == ExitStatus.DATA_ERROR and "'drop' does not apply" in err
