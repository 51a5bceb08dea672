"""Issue 9, nothing lost: what a writer may replace, write claims, the folder swap and its recovery."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from hiersrec import files
from hiersrec.cli import ExitStatus, main
from hiersrec.data.ingest import open_dataset
from hiersrec.data.storage import FORMAT, load_prepared, save_prepared
from hiersrec.errors import ArtifactError
from hiersrec.files import TargetBusyError, claim_target, recover_directory, replace_directory


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def prepared(tmp_path, tiny_shop):
    return save_prepared(tiny_shop, tmp_path / "ds")


@pytest.mark.parametrize(
    "manifest",
    [
        '{"name": "my web app", "version": "1.0"}',
        "{not json",
        '{"format_version": 1, "files": {"index.html": "abc"}, "fingerprint": "x"}',
        '{"format": "webmanifest", "format_version": 1, "files": {}, "fingerprint": "x"}',
    ],
    ids=["web-app", "unparsable", "other-files", "other-format"],
)
def test_prepare_refuses_a_folder_whose_manifest_is_not_ours_issue_9(capsys, tmp_path, manifest):
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text(manifest)
    (app / "index.html").write_text("<html></html>")
    before = snapshot(app)
    code, out, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(app))
    assert code == ExitStatus.ARTIFACT_ERROR
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "manifest.json" in err
    assert out == "" and snapshot(app) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]  # no temporary folder, no lock left


def test_new_manifests_carry_the_format_and_old_ones_are_still_ours_issue_9(tmp_path, tiny_shop, prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["format"] == FORMAT == "hiersrec-prepared" and manifest["format_version"] == 1
    # A folder from before the "format" field: format_version 1 with its digest layout is read and replaced.
    del manifest["format"]
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    assert load_prepared(prepared).name == "synthetic"
    assert open_dataset(prepared).name == "synthetic"
    save_prepared(tiny_shop, prepared)
    assert json.loads((prepared / "manifest.json").read_text())["format"] == FORMAT


def test_readers_name_a_foreign_manifest_issue_9(tmp_path):
    (tmp_path / "manifest.json").write_text('{"name": "my web app"}')
    with pytest.raises(ArtifactError, match='not the manifest of a hiersrec prepared dataset .no "format"'):
        load_prepared(tmp_path)
    with pytest.raises(ArtifactError, match="not the manifest of a hiersrec prepared dataset"):
        open_dataset(tmp_path)


def test_a_prepared_dataset_holding_the_users_files_is_not_replaced_issue_9(capsys, prepared):
    (prepared / "notes.txt").write_text("mine")
    before = snapshot(prepared)
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(prepared))
    assert code == ExitStatus.ARTIFACT_ERROR and "also holds other files (notes.txt)" in err
    assert snapshot(prepared) == before


def test_export_replaces_only_its_own_earlier_export_issue_9(capsys, tmp_path, prepared):
    # A RecBole dataset folder of the same name, with the very file names an export writes.
    theirs = tmp_path / "rb" / "synthetic"
    theirs.mkdir(parents=True)
    for name in ("synthetic.train.inter", "synthetic.item", "synthetic.yaml"):
        (theirs / name).write_text("their data\n")
    before = snapshot(theirs)
    code, _, err = run(capsys, "export", str(prepared), "--out", str(theirs))
    assert code == ExitStatus.ARTIFACT_ERROR and "did not write" in err and len(err.splitlines()) == 1
    assert snapshot(theirs) == before
    mine = tmp_path / "rb2" / "synthetic"
    assert run(capsys, "export", str(prepared), "--out", str(mine))[0] == ExitStatus.OK
    assert run(capsys, "export", str(prepared), "--out", str(mine))[0] == ExitStatus.OK
    assert sorted(p.name for p in mine.parent.iterdir()) == ["synthetic"]


def test_export_option_values_out_of_range_are_config_errors_issue_9(capsys, tmp_path, prepared):
    for option, value in (("--valid-fraction", "nan"), ("--valid-fraction", "1.5"), ("--max-history", "0")):
        code, _, err = run(capsys, "export", str(prepared), "--out", str(tmp_path / "x"), option, value)
        assert code == ExitStatus.CONFIG_ERROR, (option, value, err)
        assert option.removeprefix("--").replace("-", "_") in err
    assert not (tmp_path / "x").exists()


def test_out_under_a_file_is_one_line_not_a_traceback_issue_9(capsys, tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(tmp_path / "somefile.txt" / "sub"))
    assert code == ExitStatus.ARTIFACT_ERROR
    assert err.strip().endswith("somefile.txt is a file)") and len(err.splitlines()) == 1


HOLD = (
    "import sys\nfrom hiersrec.files import claim_target\n"
    "with claim_target(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"
)


@pytest.fixture
def held_by_another_process(tmp_path):
    """Claims ``tmp_path / "ds"`` in a child process until the test ends; yields the child's pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "ds")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.communicate("")


def test_a_second_writer_gets_a_clear_error_issue_9(capsys, tmp_path, tiny_shop, prepared, held_by_another_process):
    before = snapshot(prepared)
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--out", str(prepared))
    assert code == ExitStatus.ARTIFACT_ERROR
    assert f"being written by another process (pid {held_by_another_process};" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "export", str(prepared), "--out", str(tmp_path / "ds"))
    assert code == ExitStatus.ARTIFACT_ERROR and "being written by another process" in err
    with pytest.raises(TargetBusyError):
        save_prepared(tiny_shop, prepared)
    assert snapshot(prepared) == before
    assert load_prepared(prepared).name == "synthetic"  # reading needs no claim


def test_claims_are_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    import threading

    errors = []
    with claim_target(tmp_path / "t"), claim_target(tmp_path / "t"):
        thread = threading.Thread(target=lambda: errors.append(_try_claim(tmp_path / "t")))
        thread.start()
        thread.join()
    assert errors == ["busy"]
    assert _try_claim(tmp_path / "t") == "claimed"
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the claim


def _try_claim(target) -> str:
    try:
        with claim_target(target):
            return "claimed"
    except TargetBusyError:
        return "busy"


def test_a_stale_lock_of_a_killed_writer_is_taken_over_with_a_warning_issue_9(tmp_path, tiny_shop, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".ds.lock").write_text(f"{dead.pid}\n")
    with caplog.at_level(logging.WARNING, logger="hiersrec.files"):
        save_prepared(tiny_shop, tmp_path / "ds")
    assert f"taking over the lock left by pid {dead.pid}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _interrupt_between_the_two_renames(target):
    """The state a kill between the renames of the two-rename swap leaves: target moved aside, new one built."""
    target.rename(target.parent / f".{target.name}.old-0123abcd")
    partial = target.parent / f".{target.name}.tmp-4567cdef"
    partial.mkdir()
    (partial / "train.parquet").write_bytes(b"half")


def test_readers_recover_a_folder_left_missing_mid_swap_issue_9(tmp_path, prepared, caplog):
    _interrupt_between_the_two_renames(prepared)
    assert not prepared.exists()
    with caplog.at_level(logging.WARNING, logger="hiersrec.files"):
        assert load_prepared(prepared).name == "synthetic"
    assert "restored it from .ds.old-0123abcd" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the stale temporary folder is gone too
    _interrupt_between_the_two_renames(prepared)
    assert open_dataset(prepared).name == "synthetic"


def test_the_next_writer_recovers_and_cleans_up_issue_9(capsys, tmp_path, prepared, caplog):
    _interrupt_between_the_two_renames(prepared)
    code, _, err = run(capsys, "prepare", "--source", "synthetic", "--seed", "1", "--out", str(prepared))
    assert code == ExitStatus.OK, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / ".ds.tmp-89abcdef").mkdir()  # a killed writer's half-built folder beside a complete target
    save_prepared(load_prepared(prepared), prepared)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_recovery_waits_for_a_writer_in_the_middle_of_its_swap(tmp_path, prepared, held_by_another_process):
    _interrupt_between_the_two_renames(prepared)
    started = time.monotonic()
    recover_directory(prepared, wait_s=0.3)  # the holder may be about to finish: wait, then leave it alone
    assert time.monotonic() - started >= 0.3
    assert not prepared.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_replace_directory_swaps_whole_folders(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target, new = tmp_path / "t", tmp_path / ".t.tmp-1"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_directory(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_two_rename_swap_restores_the_old_folder_when_the_second_rename_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "t"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_directory(tmp_path / "missing", target)
    assert (target / "old.txt").read_text() == "old"
