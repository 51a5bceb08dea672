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


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["evaluate", "-m", "popx"], ExitStatus.CONFIG_ERROR, "Did you mean 'pop'"),
        (["evaluate", "--data", "/nonexistent", "-m", "pop"], ExitStatus.DATA_ERROR, "not found"),
        (["evaluate", "-m", "pop", "--set", "k=3"], ExitStatus.CONFIG_ERROR, "MODEL.PARAM=VALUE"),
        (["evaluate"], ExitStatus.CONFIG_ERROR, "either a trained RUN"),
        (["evaluate", "-m", "pop", "--protocol", "sampled"], ExitStatus.CONFIG_ERROR, "unknown protocol"),
        (["evaluate", "-m", "pop", "--k", "x"], ExitStatus.USAGE, "--k"),
    ],
)
def test_errors_have_exit_codes_and_one_line(args, status, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == status
    assert message in err
    if status != ExitStatus.USAGE:
        assert err.count("\n") == 1 and "Traceback" not in err
