"""The baselines on real diginetica: accuracy in the range the literature reports (a faithfulness guard)."""

from __future__ import annotations

import numpy as np
import pytest

from hiersrec.data.ingest.srgnn import read_srgnn_dir
from hiersrec.eval.protocol import evaluate
from hiersrec.models import make_baseline

# (HR@20, MRR@20) floors on the first 2,000 test sessions with default hyperparameters, a few points under what
# they reach there (S-POP 21.1 / 13.6, SR 40.6 / 14.1, SKNN 48.5 / 17.0, STAN 50.0 / 18.3). For comparison: on the
# whole test split, tuned (benchmarks/results/baselines.md), SKNN 49.4 / 17.3 and STAN 50.5 / 18.5; session-rec
# reports tuned V-SKNN / STAN at 47.3-48.0 / 17.8-18.3 on its own diginetica split; SR-GNN's paper S-POP 21.1 / 13.7.
FLOORS = {"spop": (0.20, 0.13), "sr": (0.39, 0.135), "sknn": (0.47, 0.165), "stan": (0.48, 0.175)}


@pytest.fixture(scope="module")
def diginetica(shared_data):
    return read_srgnn_dir(shared_data / "diginetica" / "srgnn_cat")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_default_baselines_reach_published_accuracy(name, diginetica):
    model = make_baseline(name).fit(diginetica.train, diginetica.catalog)
    test = diginetica.test.subset(np.arange(2000))
    metrics = evaluate(model, test, diginetica.catalog, ks=(20,)).metrics
    hr_floor, mrr_floor = FLOORS[name]
    assert metrics["hr@20"] >= hr_floor and metrics["mrr@20"] >= mrr_floor, metrics
