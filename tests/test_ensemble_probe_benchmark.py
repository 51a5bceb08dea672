"""benchmarks/ensemble_probe.py: the log-space mixture of two runs, fused with a partner, on validation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmark_support import benchmark_script
from hiersrec.models import make_model
from hiersrec.train.run import TrainingData


class FixedScores:
    """A stand-in neural model: the same item logits for every prefix, plus a bonus on the last click."""

    def __init__(self, n_columns: int, seed: int) -> None:
        self.config = SimpleNamespace(max_len=7)
        self.logits = torch.randn(n_columns, generator=torch.Generator().manual_seed(seed)) * 3

    def score(self, batch):
        scores = self.logits.expand(len(batch), -1).clone()
        scores.scatter_add_(1, batch.items[:, -1:], torch.full((len(batch), 1), 2.0))
        scores[:, 0] = float("-inf")
        return scores


def test_the_mixture_ends_are_the_runs_and_its_middle_is_symmetric(tiny_shop):
    data = TrainingData.from_prepared(tiny_shop)
    partner = make_model("sr").fit(data.train, data.catalog)
    first, second = FixedScores(tiny_shop.catalog.n_items + 1, 1), FixedScores(tiny_shop.catalog.n_items + 1, 2)
    grid = [(weight, sr_weight) for weight in (0.0, 0.5, 1.0) for sr_weight in (0.0, 2.0)]
    with benchmark_script("ensemble_probe") as module:
        forward = {
            (r["weight"], r["sr_weight"]): r["metrics"] for r in module.probe([first, second], partner, data, grid)
        }
        reverse = {
            (r["weight"], r["sr_weight"]): r["metrics"] for r in module.probe([second, first], partner, data, grid)
        }
    for sr_weight in (0.0, 2.0):
        assert forward[(0.0, sr_weight)] == reverse[(1.0, sr_weight)]
        assert forward[(1.0, sr_weight)] == reverse[(0.0, sr_weight)]
        assert forward[(0.5, sr_weight)] == pytest.approx(reverse[(0.5, sr_weight)])
    assert forward[(0.0, 0.0)] != forward[(1.0, 0.0)]  # the two stand-ins rank differently
    assert forward[(0.0, 2.0)] != forward[(0.0, 0.0)]  # the partner moves the ranking
