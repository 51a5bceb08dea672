"""benchmarks/fusion_seeds.py: seeds of several fusion.py results files pooled, disagreeing files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark_support import benchmark_script


@pytest.fixture(scope="module")
def fusion_seeds():
    with benchmark_script("fusion_seeds") as module:
        yield module


def _comparison(difference: float) -> dict:
    cell = {"difference": difference, "ci": [difference - 0.01, difference + 0.01]}
    return {"mrr@20": cell, "hr@20": cell, "wilcoxon_p": 1e-5}


def _document(commit: str, runs: dict[str, tuple[float, float, float | None]], **changes) -> dict:
    """A fusion.py payload whose runs have the given (neural, fused, refit) MRR@20 (HR@20 = 3 x MRR@20)."""
    test, comparisons = [], []
    for run, stages in runs.items():
        row = {"run": run, "rule": "probability", "weight": 0.2}
        comparison = {}
        for stage, value in zip(("neural", "fused", "refit"), stages, strict=True):
            if value is not None:
                row[stage] = {"mrr@20": value, "hr@20": 3 * value}
                comparison[f"{stage}_minus_baseline"] = _comparison(value - 0.18)
        test.append(row)
        comparisons.append(comparison)
    document = {
        "header": {"commit": commit},
        "dataset": "shop",
        "final_partner": "vstan",
        "n_test_cases": 100,
        "baseline": {"name": "vstan", "params": {"k": 10}, "test": {"mrr@20": 0.18, "hr@20": 0.5}},
        "test": test,
        "comparisons": comparisons,
    }
    return {**document, **changes}


def test_seeds_of_several_files_are_pooled_with_their_source(fusion_seeds):
    documents = {
        "a.json": _document("aaa", {"s42": (0.18, 0.19, 0.194), "s1": (0.19, 0.19, 0.196)}),
        "b.json": _document("bbb", {"s2": (0.20, 0.21, 0.2)}),
    }
    payload = fusion_seeds.pool(documents)
    assert [(seed["run"], seed["source"], seed["commit"]) for seed in payload["seeds"]] == [
        ("s42", "a.json", "aaa"), ("s1", "a.json", "aaa"), ("s2", "b.json", "bbb"),
    ]  # fmt: skip
    refit = payload["pooled"]["refit"]["mrr@20"]
    assert refit["n"] == 3
    assert refit["mean"] == pytest.approx(np.mean([0.194, 0.196, 0.2]))
    assert refit["std"] == pytest.approx(np.std([0.194, 0.196, 0.2], ddof=1))
    assert payload["pooled"]["neural"]["hr@20"]["mean"] == pytest.approx(3 * np.mean([0.18, 0.19, 0.20]))
    assert payload["seeds"][2]["comparisons"]["refit_minus_baseline"]["mrr@20"]["difference"] == pytest.approx(0.02)


def test_a_seed_without_refit_counts_only_where_it_has_figures(fusion_seeds):
    payload = fusion_seeds.pool({"a.json": _document("aaa", {"s42": (0.18, 0.19, 0.2), "s1": (0.2, 0.21, None)})})
    assert payload["pooled"]["refit"]["mrr@20"] == {"mean": pytest.approx(0.2), "std": 0.0, "n": 1}
    assert payload["pooled"]["fused"]["mrr@20"]["n"] == 2
    assert "refit" not in payload["seeds"][1]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "other"}, "dataset"),
        ({"final_partner": "sr"}, "final_partner"),
        ({"n_test_cases": 99}, "n_test_cases"),
        ({"baseline": {"name": "vstan", "params": {"k": 20}, "test": {}}}, "baseline"),
    ],
)
def test_files_that_do_not_agree_are_refused(fusion_seeds, changes, message):
    documents = {
        "a.json": _document("aaa", {"s42": (0.18, 0.19, 0.2)}),
        "b.json": _document("bbb", {"s2": (0.2, 0.21, 0.2)}, **changes),
    }
    with pytest.raises(SystemExit, match=message):
        fusion_seeds.pool(documents)


def test_a_run_given_twice_is_refused(fusion_seeds):
    documents = {
        "a.json": _document("aaa", {"s42": (0.18, 0.19, 0.2)}),
        "b.json": _document("bbb", {"s42": (0.2, 0.21, 0.2)}),
    }
    with pytest.raises(SystemExit, match="twice"):
        fusion_seeds.pool(documents)


def test_main_writes_the_pooled_table(fusion_seeds, tmp_path):
    paths = []
    for name, runs in (("a", {"s42": (0.18, 0.19, 0.194)}), ("b", {"s2": (0.2, 0.21, 0.2)})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_document(name, runs)))
    fusion_seeds.main([*map(str, paths), "--out", str(tmp_path / "pooled")])
    written = json.loads((tmp_path / "pooled.json").read_text())
    assert written["header"]["command"].startswith("python benchmarks/fusion_seeds.py")
    assert [seed["run"] for seed in written["seeds"]] == ["s42", "s2"]
    markdown = (tmp_path / "pooled.md").read_text()
    assert "| refit | 2 | 59.10 ± 1.27 | 19.70 ± 0.42 |" in markdown
