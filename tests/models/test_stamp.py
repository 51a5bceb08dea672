"""STAMP's own checks: a known answer, causal memories, whole-session = prefix training, the plain loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiersrec.config import DataConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.protocol import evaluate
from hiersrec.models.stamp import STAMP, STAMPConfig
from hiersrec.train.run import TrainingData, fit_run


@pytest.fixture(scope="module")
def ring_shop():
    """Sessions that only walk their category's ring: the next item is a function of the current one."""
    config = SyntheticShopConfig(
        n_items=37, n_categories=5, n_groups=2, n_sessions=400, stay_prob=1.0, ring_prob=1.0, seed=5
    )
    return make_synthetic_shop(config)


def _sessions(shop):
    lengths = shop.train.lengths
    return [shop.train.session(int(np.flatnonzero(lengths == n)[0])) for n in (2, 3, 5, 8, 4)]


def _batch(sessions, catalog):
    items, lengths = left_pad(sessions, max(len(s) for s in sessions))
    return make_batch(items, lengths, catalog)


def _model(catalog, **options) -> STAMP:
    torch.manual_seed(0)
    model = STAMP.from_config(STAMPConfig(d_model=16, max_len=7, **options), catalog)
    with torch.no_grad():  # non-trivial weights, so that equalities cannot pass by zeros
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def test_it_learns_the_ring_successor(ring_shop, tmp_path):
    config = RunConfig(
        data=DataConfig(),
        # The authors' initial scales (0.002, 0.05) learn too, but need ~30 epochs here to leave the flat start.
        model=STAMPConfig(d_model=32, max_len=7, embedding_std=0.1, weight_std=0.1),
        train=TrainConfig(epochs=10, batch_targets=256, lr=1e-2, warmup_steps=5, show_progress=False, device="cpu"),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(ring_shop), tmp_path / "run")
    report = evaluate(artifact.model, ring_shop.test, ring_shop.catalog, ks=[1, 5], max_len=7)
    assert report.metrics["hr@1"] > 0.95, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("max_norm", [1.5, 0.0])
def test_the_whole_session_pass_scores_every_prefix_as_scoring_it_alone(tiny_shop, max_norm):
    model = _model(tiny_shop.catalog, embedding_max_norm=max_norm)
    sessions = _sessions(tiny_shop)
    query, targets = model.encode_positions(_batch(sessions, tiny_shop.catalog))
    prefixes = [s[:j] for s in sessions for j in range(1, len(s))]  # the same cases, one row each
    assert torch.equal(targets, torch.from_numpy(np.concatenate([s[1:] for s in sessions])))
    torch.testing.assert_close(
        model.score(_batch(prefixes, tiny_shop.catalog)), model.score_query(query), rtol=1e-5, atol=1e-5
    )


def test_changing_a_later_click_never_changes_earlier_scores(tiny_shop):
    model = _model(tiny_shop.catalog)
    session = _sessions(tiny_shop)[3]  # 8 clicks
    changed = session.copy()
    changed[5] = 1 + (changed[5] % 30)
    for prefix in range(1, 6):
        before = model.score(_batch([session[:prefix]], tiny_shop.catalog))
        assert torch.equal(before, model.score(_batch([changed[:prefix]], tiny_shop.catalog)))
    assert not torch.equal(
        model.score(_batch([session[:7]], tiny_shop.catalog)), model.score(_batch([changed[:7]], tiny_shop.catalog))
    )


def test_the_scores_are_the_trilinear_product_of_the_two_interests(tiny_shop):
    # Written out for a 3-click session without the norm clip: m_s, the attention, m_a, h_s, h_t, the scores.
    model = _model(tiny_shop.catalog, embedding_max_norm=0.0)
    session = [4, 11, 17]
    with torch.no_grad():
        x = model.items.weight[session]
        mean = x.mean(0)
        weights = [
            model.attention_vector(
                torch.sigmoid(model.attention_item(x[i]) + model.attention_last(x[2]) + model.attention_mean(mean))
            )
            for i in range(3)
        ]
        attended = sum(w * x[i] for i, w in enumerate(weights)) + mean
        product = torch.tanh(model.general_cell(attended)) * torch.tanh(model.current_cell(x[2]))
        expected = model.items.weight[1:] @ product
    scores = model.score(_batch([np.array(session)], tiny_shop.catalog))[0]
    torch.testing.assert_close(scores[1:], expected, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(scores[0])


def test_looked_up_embeddings_are_clipped_to_the_max_norm(tiny_shop):
    model = _model(tiny_shop.catalog, embedding_max_norm=0.5)
    items = torch.tensor([[3, 8, 0]])
    norms = model._embed(items).norm(dim=-1)
    raw = model.items(items).norm(dim=-1)
    torch.testing.assert_close(norms, raw.clamp(max=0.5))
    assert (raw[0, :2] > 0.5).all()  # the bound really acted


def test_the_loss_is_the_softmax_over_all_items(tiny_shop):
    model = _model(tiny_shop.catalog)
    batch = _batch(_sessions(tiny_shop), tiny_shop.catalog)
    query, targets = model.encode_positions(batch)
    expected = F.cross_entropy((query.vectors @ model.items.weight.T)[:, 1:], targets - 1)
    out = model(batch)
    torch.testing.assert_close(out.loss, expected)
    assert out.category_loss.item() == 0.0 and out.loss.item() == out.item_loss.item()
