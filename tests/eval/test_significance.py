"""Paired comparisons over the same test cases (issue 12): per-case ranks, bootstrap intervals, Wilcoxon."""

from __future__ import annotations

import numpy as np
import pytest

from hiersrec.eval.protocol import evaluate
from hiersrec.eval.significance import case_ranks, compare, per_case_metrics, significantly_better
from hiersrec.models import make_model


def test_per_case_ranks_average_to_the_evaluated_metrics(tiny_shop):
    model = make_model("sr").fit(tiny_shop.train, tiny_shop.catalog)
    ranks = case_ranks(model, tiny_shop.test, tiny_shop.catalog)
    report = evaluate(model, tiny_shop.test, tiny_shop.catalog, ks=[20])
    assert ranks.size == report.n_cases
    per_case = per_case_metrics(ranks, 20)
    assert per_case["mrr@20"].mean() == pytest.approx(report.metrics["mrr@20"], abs=1e-9)
    assert per_case["hr@20"].mean() == pytest.approx(report.metrics["hr@20"], abs=1e-9)


def test_a_clearly_better_model_is_significant_and_an_equal_one_is_not():
    rng = np.random.default_rng(1)
    worse = rng.integers(1, 60, 3000).astype(np.float32)
    better = np.maximum(1, worse - rng.integers(0, 4, 3000)).astype(np.float32)  # never worse, often better
    result = compare(better, worse, n_boot=500)
    assert result["mrr@20"]["difference"] > 0 and result["mrr@20"]["ci"][0] > 0 and result["wilcoxon_p"] < 1e-6
    assert significantly_better(result)
    same = compare(worse, worse, n_boot=200)
    assert same["wilcoxon_p"] == 1.0 and same["mrr@20"]["difference"] == 0 and not significantly_better(same)
    # a coin flip of which model wins each case: the interval holds 0
    noise = compare(worse, rng.permutation(worse), n_boot=500)
    assert noise["mrr@20"]["ci"][0] < noise["mrr@20"]["difference"] < noise["mrr@20"]["ci"][1]


def test_unpaired_ranks_are_refused():
    with pytest.raises(ValueError, match="same cases"):
        compare(np.ones(3), np.ones(4))
