"""``hiersrec train`` end to end: train -> evaluate (test once), resume, and early config errors."""

from __future__ import annotations

import json

import pytest

from hiersrec.cli import ExitStatus, main
from hiersrec.data.storage import save_prepared

FAST = [
    "--set", "model.d_model=16", "--set", "model.d_ff=32", "--set", "model.max_len=7",
    "--set", "train.epochs=2", "--set", "train.batch_targets=128", "--set", "train.warmup_steps=5",
    "--set", "train.device=cpu",
]  # fmt: skip


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def prepared(tiny_shop, tmp_path_factory):
    return save_prepared(tiny_shop, tmp_path_factory.mktemp("data") / "tiny")


def test_train_then_evaluate_on_test(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "synthetic_hiersrec", "--data", str(prepared), "--out", str(out), *FAST, "--json"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs_run"] == 2 and summary["validation_split"]["split"] == "train_tail"
    assert 0 < summary["valid"]["mrr@20"] <= summary["valid"]["hr@20"] <= 1
    code, stdout, err = run_cli(["evaluate", str(out), "--data", str(prepared), "--k", "20", "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["extra"]["split"] == "test" and report["extra"]["validation_split"]["split"] == "train_tail"
    assert report["model"]["name"] == "hiersrec" and 0 < report["metrics"]["hr@20"] <= 1


def test_resume_finishes_an_interrupted_run(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--data", str(prepared), "--out", str(out), *FAST, "--set", "train.epochs=1"], capsys
    )
    assert code == 0, err
    (out / "meta.json").unlink()  # as if it stopped before finishing
    # The saved configuration is reused; only how the run is executed may change (here: --json, no progress bar).
    code, _, err = run_cli(["train", "--data", str(prepared), "--out", str(out), "--resume", "--json"], capsys)
    assert code == 0, err
    assert (out / "meta.json").is_file() and json.loads((out / "meta.json").read_text())["resumed"] is True
    code, _, err = run_cli(
        ["train", "--data", str(prepared), "--out", str(out), "--resume", "--set", "train.lr=1e-4"], capsys
    )
    assert code == ExitStatus.CONFIG_ERROR and "differs" in err


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--set", "train.lrr=1"], ExitStatus.CONFIG_ERROR, "did you mean 'lr'?"),
        (["--set", "model.d_model=30", "--set", "model.n_heads=4"], ExitStatus.CONFIG_ERROR, "divisible"),
        (["--preset", "nope"], ExitStatus.CONFIG_ERROR, "no preset 'nope'"),
        (["--set", "model.numeric_features=weight"], ExitStatus.CONFIG_ERROR, "no column 'weight'"),
    ],
)
def test_bad_configs_fail_before_training(prepared, tmp_path, capsys, extra, status, message):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(prepared), "--out", str(out), *extra], capsys)
    assert code == status and message in err
    assert err.count("\n") == 1
    assert not out.exists()  # nothing written


def test_an_existing_run_needs_resume(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    code, _, err = run_cli(["train", "--data", str(prepared), "--out", str(out), *FAST], capsys)
    assert code == ExitStatus.ARTIFACT_ERROR and "--resume" in err


@pytest.mark.parametrize(("command", "words"), [("train", ["hiersrec[search]"]), ("fuse", ["[fusion]"])])
def test_help_keeps_bracketed_words(command, words, capsys, monkeypatch):
    # The help is rendered as rich markup, where an unescaped [word] is a tag and vanishes from the text.
    monkeypatch.setenv("COLUMNS", "400")
    code, stdout, _ = run_cli([command, "--help"], capsys)
    assert code == 0
    for word in words:
        assert word in stdout


def test_validation_figures_are_refused_for_runs_that_saw_the_validation_tail(prepared, tmp_path, capsys):
    run, fused, refit = tmp_path / "run", tmp_path / "fused", tmp_path / "refit"
    code, _, err = run_cli(["train", "--data", str(prepared), "--out", str(run), *FAST, "--json"], capsys)
    assert code == 0, err
    valid = ["--data", str(prepared), "--split", "valid", "--k", "20", "--json"]
    code, stdout, err = run_cli(["evaluate", str(run), *valid], capsys)
    assert code == 0, err  # selected on that tail, never fitted to it
    selected = json.loads((run / "metrics.json").read_text())["valid"]["mrr@20"]
    assert json.loads(stdout)["metrics"]["mrr@20"] == pytest.approx(selected, abs=1e-6)
    code, _, err = run_cli(["fuse", str(run), "--data", str(prepared), "--partner", "sr", "--out", str(fused)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["refit", str(run), "--data", str(prepared), "--out", str(refit)], capsys)
    assert code == 0, err
    for seen, words in ((fused, "sr partner fitted on all training sessions"), (refit, "a refit")):
        code, _, err = run_cli(["evaluate", str(seen), *valid], capsys)
        assert code == ExitStatus.CONFIG_ERROR and words in err and "inflated" in err
