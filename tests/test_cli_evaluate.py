import json

import pytest

from hiersrec.cli import ExitStatus, main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_prepare_then_evaluate_baselines_end_to_end(tmp_path, capsys):
    prepared = tmp_path / "shop"
    code, _, err = run_cli(["data", "prepare", "--source", "synthetic", "--out", str(prepared)], capsys)
    assert code == 0, err
    code, out, err = run_cli(
        ["evaluate", "--data", str(prepared), "-m", "sr", "-m", "last_category", "--k", "10", "--json"], capsys
    )
    assert code == 0, err
    results = json.loads(out)
    assert set(results) == {"sr", "last_category"}
    sr = results["sr"]
    assert sr["protocol"] == "all_prefixes" and sr["ties"] == "pessimistic" and sr["extra"]["split"] == "test"
    assert sr["extra"]["fingerprint"]  # read from the prepared dataset's manifest
    # The synthetic shop walks category rings: sequential rules find most next items.
    assert sr["metrics"]["hr@10"] > 0.8 and set(sr["metrics"]) == {"hr@10", "mrr@10", "ndcg@10"}
    assert 0.7 < results["last_category"]["metrics"]["cat_acc@1"] < 0.9  # stay_prob = 0.8


def test_table_output_and_tuning_on_validation(capsys):
    code, out, err = run_cli(["evaluate", "-m", "pop", "-m", "markov", "--tune-trials", "2", "--k", "20"], capsys)
    assert code == 0, err
    assert "markov" in out and "hr@20" in out and "protocol=all_prefixes" in out


def test_json_output_records_the_tuning(capsys):
    # The chosen parameters alone do not say how they were chosen: trials, validation scores and times do.
    code, out, err = run_cli(["evaluate", "-m", "sr", "--tune-trials", "3", "--k", "20", "--json"], capsys)
    assert code == 0, err
    tuning = json.loads(out)["extra"]["tuning"]
    assert len(tuning["trials"]) == 3 and tuning["metric"] == "mrr@20"
    assert all("metric" in trial and "fit_seconds" in trial for trial in tuning["trials"])
    assert tuning["best_score"] == max(trial["metric"] for trial in tuning["trials"])


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["evaluate", "-m", "popx"], ExitStatus.CONFIG_ERROR, "Did you mean 'pop'"),
        (["evaluate", "--data", "/nonexistent", "-m", "pop"], ExitStatus.DATA_ERROR, "not found"),
        (["evaluate", "-m", "pop", "--set", "k=3"], ExitStatus.CONFIG_ERROR, "MODEL.PARAM=VALUE"),
        (["evaluate"], ExitStatus.CONFIG_ERROR, "either a trained RUN"),
        (["evaluate", "-m", "pop", "--protocol", "sampled"], ExitStatus.CONFIG_ERROR, "unknown protocol"),
        (["evaluate", "-m", "pop", "--k", "x"], ExitStatus.USAGE, "--k"),
        # issue 9: these were tracebacks, or failed only after the whole evaluation
        (["evaluate", "-m", "pop", "--ties", "bogus"], ExitStatus.CONFIG_ERROR, "--ties 'bogus'"),
        (["evaluate", "-m", "pop", "--batch-size", "0"], ExitStatus.USAGE, "--batch-size"),
        (["evaluate", "-m", "pop", "--k", "0"], ExitStatus.CONFIG_ERROR, "--k: cutoffs"),
        (["evaluate", "-m", "pop", "--output", "."], ExitStatus.CONFIG_ERROR, "is a folder"),
        (["evaluate", "-m", "pop", "--output", "pyproject.toml/x.json"], ExitStatus.CONFIG_ERROR, "is a file"),
    ],
)
def test_errors_have_exit_codes_and_one_line(args, status, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == status
    assert message in err
    if status != ExitStatus.USAGE:
        assert err.count("\n") == 1 and "Traceback" not in err


def test_trained_run_full_ranking_and_candidates(tmp_path, capsys):
    from hiersrec.data.storage import load_prepared, save_prepared
    from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
    from inference_support import trained_run

    shop = SyntheticShopConfig(n_items=120, n_categories=12, n_groups=3, n_sessions=800, seed=5)
    data_dir = save_prepared(make_synthetic_shop(shop), tmp_path / "data")
    run = trained_run(load_prepared(data_dir))

    code, out, err = run_cli(["evaluate", str(run), "--data", str(data_dir), "--k", "20", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["extra"]["validation_split"]["split"] == "train_tail"
    full_hr = report["metrics"]["hr@20"]
    assert 0.0 < full_hr <= 1.0 and "cat_acc@1" in report["metrics"]

    args = ["evaluate", str(run), "--data", str(data_dir), "--candidates", "100%", "--candidates", "10%", "--json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    candidates = json.loads(out)
    everything, tenth = candidates["budgets"]
    # The whole catalogue as candidates is exact ranking; a smaller budget can only lose hits.
    assert everything["candidate_recall"] == 1.0
    assert everything["metrics"]["hr@20"] == pytest.approx(full_hr)
    assert tenth["mean_candidate_fraction"] < 0.5 and tenth["metrics"]["hr@20"] <= full_hr + 1e-9

    code, _, err = run_cli(["evaluate", str(run), "--data", "synthetic"], capsys)
    assert code == ExitStatus.ARTIFACT_ERROR and "vocabulary" in err
    code, _, err = run_cli(["evaluate", "-m", "pop", "--candidates", "4%"], capsys)
    assert code == ExitStatus.CONFIG_ERROR and "--candidates needs a RUN" in err
