"""SASRec's own checks beyond the contract suite: causality, the loss kernel against the plain loss, a known answer."""

from __future__ import annotations

import numpy as np
import torch

from hiersrec.config import DataConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.eval.protocol import evaluate
from hiersrec.models.sasrec import SASRec, SASRecConfig
from hiersrec.train.run import TrainingData, fit_run


def _sessions(tiny_shop):
    lengths = tiny_shop.train.lengths
    return [tiny_shop.train.session(int(np.flatnonzero(lengths == n)[0])) for n in (2, 3, 5, 8, 4)]


def _batch(sessions, catalog):
    items, lengths = left_pad(sessions, max(len(s) for s in sessions))
    return make_batch(items, lengths, catalog)


def _model(catalog) -> SASRec:
    torch.manual_seed(0)
    model = SASRec.from_config(SASRecConfig(d_model=16, n_heads=2, d_ff=24, max_len=7), catalog)
    with torch.no_grad():  # non-trivial weights, so that equalities cannot pass by zeros
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def test_changing_a_later_click_never_changes_earlier_states(tiny_shop):
    model = _model(tiny_shop.catalog)
    session = _sessions(tiny_shop)[3]  # 8 clicks
    changed = session.copy()
    changed[5] = 1 + (changed[5] % 30)
    for prefix in range(1, 5):
        before = model.score(_batch([session[:prefix]], tiny_shop.catalog))
        after = model.score(_batch([changed[:prefix]], tiny_shop.catalog))
        assert torch.equal(before, after)
    assert not torch.equal(
        model.score(_batch([session[:7]], tiny_shop.catalog)), model.score(_batch([changed[:7]], tiny_shop.catalog))
    )


def test_prefix_scores_equal_the_whole_session_pass_and_the_kernel_equals_the_plain_loss(tiny_shop):
    model = _model(tiny_shop.catalog)
    sessions = _sessions(tiny_shop)
    query, targets = model.encode_positions(_batch(sessions, tiny_shop.catalog))
    prefixes = [s[:j] for s in sessions for j in range(1, len(s))]  # the same cases, one row each
    torch.testing.assert_close(
        model.score(_batch(prefixes, tiny_shop.catalog)), model.score_query(query), rtol=1e-5, atol=1e-5
    )
    out = model.train()(_batch(sessions, tiny_shop.catalog))
    model.eval()
    with torch.no_grad():
        assert out.category_loss.item() == 0.0 and out.loss.item() == out.item_loss.item()
    # Dropout off for the comparison: the kernel and the loss written plainly agree.
    torch.testing.assert_close(model(_batch(sessions, tiny_shop.catalog)).loss, model.reference_loss(query, targets))


def test_it_learns_the_ring_successor_of_the_tiny_shop(tiny_shop, tmp_path):
    # Every click in tiny_shop is its category ring's successor (stay) or a jump: a sequence model must find it.
    config = RunConfig(
        data=DataConfig(),
        model=SASRecConfig(d_model=32, n_heads=2, d_ff=64, max_len=7, dropout=0.0, input_dropout=0.0),
        train=TrainConfig(epochs=12, batch_targets=256, lr=5e-3, warmup_steps=5, show_progress=False, device="cpu"),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(tiny_shop), tmp_path / "run")
    report = evaluate(artifact.model, tiny_shop.test, tiny_shop.catalog, ks=[1, 20], max_len=7)
    assert report.metrics["hr@1"] > 0.7 and report.metrics["hr@20"] > 0.95, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
