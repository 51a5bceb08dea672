"""benchmarks/partner_valid.py over real fused runs: text-kNN and SR tried as partners of a tiny HierSRec."""

from __future__ import annotations

import json

import pytest

from benchmark_support import benchmark_script
from hiersrec.config import DataConfig, FusionConfig, RunConfig, TrainConfig
from hiersrec.models.hiersrec import HierSRecConfig
from hiersrec.train.run import TrainingData, fit_run


def _fused_run(tiny_shop, directory, seed: int):
    config = RunConfig(
        data=DataConfig(),
        model=HierSRecConfig(d_model=16, n_heads=2, d_ff=24, max_len=7, d_category=6, d_feed=5),
        train=TrainConfig(epochs=2, batch_targets=256, warmup_steps=2, show_progress=False, device="cpu", seed=seed),
        fusion=FusionConfig(partner="textknn", alternatives=("sr",), rules=("logit",), logit_weights=(0.0, 2.0)),
    )
    fit_run(config, TrainingData.from_prepared(tiny_shop), directory)
    return directory


def test_pools_each_partners_best_trial_over_seeds(tiny_shop, tmp_path):
    runs = [_fused_run(tiny_shop, tmp_path / f"s{seed}", seed) for seed in (1, 2)]
    with benchmark_script("partner_valid") as script:
        script.main(["--label", "t", "--run", "tiny=" + ",".join(map(str, runs)), "--out", str(tmp_path / "out")])
    groups = json.loads((tmp_path / "out.json").read_text())["groups"]
    rows = groups["tiny"]
    assert [row["run"] for row in rows] == [str(run) for run in runs]
    for row, run in zip(rows, runs, strict=True):
        fusion = json.loads((run / "metrics.json").read_text())["fusion"]
        assert set(row["partners"]) == {"textknn", "sr"} and row["chosen"] == fusion["partner"]
        for partner, best in row["partners"].items():
            tried = [t for t in fusion["trials"] if t["partner"] == partner]
            assert best["metrics"]["mrr@20"] == max(t["metrics"]["mrr@20"] for t in tried)
            at_zero = next(t for t in tried if t["weight"] == 0.0)["metrics"]
            neural = row["neural"]
            assert at_zero["mrr@20"] == pytest.approx(neural["mrr@20"], abs=1e-9)  # weight 0 = the neural model
    table = (tmp_path / "out.md").read_text()
    assert "| tiny | textknn | 2 |" in table and "| tiny | none (neural alone) | 2 |" in table


def test_refuses_a_run_without_fusion(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "metrics.json").write_text(json.dumps({"neural_valid": {}, "fusion": None}))
    with benchmark_script("partner_valid") as script, pytest.raises(SystemExit, match="not a fused run"):
        script.main(["--label", "t", "--run", f"x={tmp_path / 'plain'}", "--out", str(tmp_path / "out")])
