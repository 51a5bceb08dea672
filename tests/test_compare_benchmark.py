"""benchmarks/compare.py: every model in one table, tested once, paired tests, a rerun keeps finished jobs."""

from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmark_support import benchmark_script
from hiersrec.artifact import load_artifact
from hiersrec.config import load_config
from hiersrec.data.ingest import open_dataset
from hiersrec.data.storage import save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.eval.protocol import evaluate


@pytest.fixture(scope="module")
def compare():
    with benchmark_script("compare") as module:
        yield module


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    config = SyntheticShopConfig(n_items=120, n_categories=8, n_groups=2, n_sessions=600, seed=3)
    return save_prepared(make_synthetic_shop(config), tmp_path_factory.mktemp("shop") / "prepared")


def test_table_paired_tests_and_a_rerun_that_keeps_finished_jobs(compare, shop, tmp_path, capsys):
    out, runs = tmp_path / "results" / "compare-shop", tmp_path / "runs"
    common = ["--dataset", str(shop), "--seeds", "0,1", "--threads", "1", "--out", str(out), "--runs-dir", str(runs)]
    neural = ["--set", "train.epochs=1", "--set", "model.d_model=16", "--set", "train.batch_targets=256"]
    compare.main([*common, "--models", "stamp,spop", *neural])

    records = [json.loads(line) for line in (out.parent / "compare-shop.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["seed"]) for r in records) == [("spop", None), ("stamp", 0), ("stamp", 1)]
    payload = json.loads((out.parent / "compare-shop.json").read_text())
    summary = payload["summary"]
    reference = payload["reference"]
    assert reference == max(summary, key=lambda m: summary[m]["test"]["mrr@20"]["mean"])
    other = "spop" if reference == "stamp" else "stamp"
    # spop is one fit: it is paired with both stamp seeds, and each pair is over the same test cases.
    assert len(payload["paired"][other]) == 2
    assert set(payload["paired"]) == {other}

    # The metrics read from the saved ranks are the evaluator's own for the same trained model.
    stamp = next(r for r in records if r["model"] == "stamp" and r["seed"] == 1)
    artifact, dataset = load_artifact(Path(runs) / "compare-shop" / "stamp-seed1"), open_dataset(str(shop))
    report = evaluate(artifact.model, dataset.test, artifact.catalog, ks=(10, 20), protocol=dataset.default_protocol)
    for key in ("hr@20", "mrr@20", "ndcg@10"):
        assert stamp["test"][key] == pytest.approx(report.metrics[key], abs=1e-6)
    assert np.load(stamp["ranks"]).size == report.n_cases == stamp["test_cases"]
    assert stamp["epochs_run"] == 1 and stamp["epoch_seconds"] > 0 and stamp["peak_train_rss_gib"] > 0
    assert [h["epoch"] for h in stamp["valid_history"]] == [1]
    assert stamp["valid_history"][0]["valid_mrr@20"] == pytest.approx(stamp["valid"]["mrr@20"])
    markdown = (out.parent / "compare-shop.md").read_text()
    own_lr = load_config(model="stamp").train.lr  # the model's own training default, shown with its row
    assert stamp["lr"] == own_lr
    assert f"| stamp | train | 2 | {own_lr} |" in markdown and "| spop | fit | 1 | - |" in markdown

    # Run again with one model more: the three finished jobs are kept, only pop runs.
    capsys.readouterr()
    compare.main([*common, "--models", "stamp,spop,pop", *neural])
    assert "4 jobs, 3 already in compare-shop.jsonl" in capsys.readouterr().out
    records = [json.loads(line) for line in (out.parent / "compare-shop.jsonl").read_text().splitlines()]
    assert [r["model"] for r in records].count("pop") == 1 and len(records) == 4

    # Chosen references (e.g. a model and its ablation): every other model is paired with each, from the same jobs.
    compare.main([*common, "--models", "stamp,spop,pop", *neural, "--reference", "pop", "--reference", "spop"])
    payload = json.loads((out.parent / "compare-shop.json").read_text())
    assert payload["reference"] == "pop" and list(payload["paired_by_reference"]) == ["pop", "spop"]
    assert payload["paired"] == payload["paired_by_reference"]["pop"] and set(payload["paired"]) == {"stamp", "spop"}
    assert len(payload["paired_by_reference"]["spop"]["stamp"]) == 2  # one fit, paired with both seeds
    markdown = (out.parent / "compare-shop.md").read_text()
    assert "paired tests against pop" in markdown and "paired tests against spop" in markdown
    assert "| pop | fit | 1 |" in markdown and "| reference |" in markdown
    with pytest.raises(SystemExit, match="no_such_model"):
        compare.main([*common, "--models", "stamp,spop,pop", *neural, "--reference", "no_such_model"])

    # Other settings for a finished job are refused, not silently mixed into the table.
    changed = [arg.replace("train.epochs=1", "train.epochs=2") for arg in neural]
    with pytest.raises(SystemExit, match="other settings"):
        compare.main([*common, "--models", "stamp", *changed])

    # A saved run is evaluated only on the data it was trained on.
    other = save_prepared(make_synthetic_shop(SyntheticShopConfig(n_sessions=300, seed=4)), tmp_path / "other")
    saved = ["--run", f"stamp={runs / 'compare-shop' / 'stamp-seed0'}", "--out", str(tmp_path / "elsewhere")]
    with pytest.raises(ArtifactError, match="fingerprint|vocabulary"):
        compare.main(["--dataset", str(other), "--threads", "1", "--runs-dir", str(runs), *saved])


def test_bad_options_fail_before_anything_runs(compare, shop, tmp_path):
    with pytest.raises(SystemExit, match="nothing to compare"):
        compare.main(["--dataset", str(shop), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="NAME:section.key=value"):
        compare.main(
            ["--dataset", str(shop), "--models", "stamp", "--model-set", "stamp", "--out", str(tmp_path / "y")]
        )
    with pytest.raises(ConfigError, match="no_such_model"):
        compare.main(["--dataset", str(shop), "--models", "no_such_model", "--out", str(tmp_path / "z")])


def test_a_search_over_tuned_values_is_refused(compare, shop, tmp_path):
    # The tuned values would fix every hyperparameter, so the "search" would be one trial of them.
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"results": [{"model": "sr", "params": {"name": "sr", "steps": 5}}]}))
    with pytest.raises(SystemExit, match="drop --baselines"):
        compare.main(["--dataset", str(shop), "--models", "sr", "--search-trials", "2", "--baselines",
                      str(baselines), "--out", str(tmp_path / "x")])  # fmt: skip
    assert not (tmp_path / "x.jsonl").exists()


def test_one_search_budget_for_every_model(compare, shop, tmp_path):
    pytest.importorskip("optuna")
    out, runs = tmp_path / "compare-search", tmp_path / "runs"
    compare.main(
        ["--dataset", str(shop), "--models", "stamp,sr", "--search-trials", "2", "--set", "train.epochs=1",
         "--set", "model.d_model=16", "--threads", "1", "--out", str(out), "--runs-dir", str(runs)]
    )  # fmt: skip
    records = {r["model"]: r for r in map(json.loads, (tmp_path / "compare-search.jsonl").read_text().splitlines())}
    for model, record in records.items():
        search = record["search"]
        assert search["search"] == "optuna" and search["name"] == model and len(search["trials"]) == 2
        assert (runs / "compare-search" / (model if model == "sr" else f"{model}-seed0") / "study.db").is_file()
    assert "| sr | fit | 1 |" in (tmp_path / "compare-search.md").read_text()  # tuned by the search


def test_valid_only_never_reads_the_test_split(compare, shop, tmp_path):
    out, runs = tmp_path / "compare-valid", tmp_path / "runs"
    compare.main(
        ["--dataset", str(shop), "--models", "stamp,sr", "--valid-only", "--set", "train.epochs=1",
         "--set", "model.d_model=16", "--threads", "1", "--out", str(out), "--runs-dir", str(runs)]
    )  # fmt: skip
    payload = json.loads((tmp_path / "compare-valid.json").read_text())
    assert payload["paired"] == {} and set(payload["summary"]) == {"stamp", "sr"}
    for record in payload["runs"]:
        assert "test" not in record and "ranks" not in record and 0 < record["valid"]["mrr@20"] <= 1
    assert not list(runs.rglob("test_ranks.npy"))
    assert "## validation" in (tmp_path / "compare-valid.md").read_text()


def test_a_job_whose_process_dies_stops_the_run_instead_of_hanging(compare):
    # ctypes.string_at(0) reads address 0: the job's process dies of a segmentation fault, as a native crash does.
    assert list(compare.run_isolated([("square root", 16.0)], math.sqrt)) == [4.0]
    finished = []
    with pytest.raises(SystemExit, match="crashing job: its process died without a result"):
        for result in compare.run_isolated([("first", 9.0), ("crashing job", 0)], _crash_or_sqrt):
            finished.append(result)
    assert finished == [3.0]  # what finished before the crash reaches the caller


def _crash_or_sqrt(value):
    return ctypes.string_at(0) if value == 0 else math.sqrt(value)
