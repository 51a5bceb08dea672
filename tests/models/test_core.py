"""CORE's own checks: the consistent space (known answers), causal weights, whole-session = prefix training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiersrec.config import DataConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.protocol import evaluate
from hiersrec.models.core import CORE, COREConfig
from hiersrec.train.run import TrainingData, fit_run

VARIANTS = ["ave", "trm"]


@pytest.fixture(scope="module")
def category_shop():
    """Sessions that stay in one category and click its items at random: the category is all there is to learn."""
    config = SyntheticShopConfig(
        n_items=37, n_categories=5, n_groups=2, n_sessions=400, stay_prob=1.0, ring_prob=0.0, zipf_exponent=0.0, seed=5
    )
    return make_synthetic_shop(config)


def _sessions(shop):
    lengths = shop.train.lengths
    return [shop.train.session(int(np.flatnonzero(lengths == n)[0])) for n in (2, 3, 5, 8, 4)]


def _batch(sessions, catalog):
    items, lengths = left_pad(sessions, max(len(s) for s in sessions))
    return make_batch(items, lengths, catalog)


def _model(catalog, variant, **options) -> CORE:
    torch.manual_seed(0)
    config = COREConfig(d_model=16, n_heads=2, d_ff=24, max_len=7, variant=variant, **options)
    model = CORE.from_config(config, catalog)
    with torch.no_grad():  # non-trivial weights, so that equalities cannot pass by zeros
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_it_finds_the_session_category(category_shop, tmp_path, variant):
    # Sizes 4..14 per category: ranking the session's category first gives HR@10 of about 0.93.
    config = RunConfig(
        data=DataConfig(),
        model=COREConfig(d_model=32, n_heads=2, d_ff=64, max_len=7, variant=variant),
        train=TrainConfig(epochs=10, batch_targets=256, lr=1e-2, warmup_steps=5, show_progress=False, device="cpu"),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(category_shop), tmp_path / "run")
    report = evaluate(artifact.model, category_shop.test, category_shop.catalog, ks=[10], max_len=7)
    assert report.metrics["hr@10"] > 0.85, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_whole_session_pass_scores_every_prefix_as_scoring_it_alone(tiny_shop, variant):
    model = _model(tiny_shop.catalog, variant)
    sessions = _sessions(tiny_shop)
    query, targets = model.encode_positions(_batch(sessions, tiny_shop.catalog))
    prefixes = [s[:j] for s in sessions for j in range(1, len(s))]  # the same cases, one row each
    assert torch.equal(targets, torch.from_numpy(np.concatenate([s[1:] for s in sessions])))
    torch.testing.assert_close(
        model.score(_batch(prefixes, tiny_shop.catalog)), model.score_query(query), rtol=1e-5, atol=1e-5
    )


def test_changing_a_later_click_never_changes_earlier_scores(tiny_shop):
    model = _model(tiny_shop.catalog, "trm")
    session = _sessions(tiny_shop)[3]  # 8 clicks
    changed = session.copy()
    changed[5] = 1 + (changed[5] % 30)
    for prefix in range(1, 6):
        before = model.score(_batch([session[:prefix]], tiny_shop.catalog))
        assert torch.equal(before, model.score(_batch([changed[:prefix]], tiny_shop.catalog)))
    assert not torch.equal(
        model.score(_batch([session[:7]], tiny_shop.catalog)), model.score(_batch([changed[:7]], tiny_shop.catalog))
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_session_of_one_repeated_item_is_that_item(tiny_shop, variant):
    # A weighted sum of one vector points along it: the item scores cos = 1, i.e. 1 / tau, the maximum.
    model = _model(tiny_shop.catalog, variant, temperature=0.1)
    scores = model.score(_batch([np.array([9, 9, 9])], tiny_shop.catalog))[0]
    assert scores.argmax().item() == 9
    torch.testing.assert_close(scores[9], torch.tensor(10.0))


def test_core_ave_scores_the_cosine_of_the_mean_input_embedding(tiny_shop):
    model = _model(tiny_shop.catalog, "ave", temperature=0.5)
    session = [4, 11, 17, 11]
    with torch.no_grad():
        mean = model.items.weight[session].mean(0)
        expected = F.cosine_similarity(mean[None], model.items.weight[1:], dim=1) / 0.5
    scores = model.score(_batch([np.array(session)], tiny_shop.catalog))[0]
    torch.testing.assert_close(scores[1:], expected, rtol=1e-5, atol=1e-5)


def test_core_trm_weights_are_a_softmax_over_the_prefix(tiny_shop):
    model = _model(tiny_shop.catalog, "trm", temperature=0.5)
    session = torch.tensor([[4, 11, 17]])
    with torch.no_grad():
        embedded = model.items(session)
        weights = model._click_logits(embedded)[0].softmax(0)
        expected = F.cosine_similarity((weights[:, None] * embedded[0]).sum(0)[None], model.items.weight[1:]) / 0.5
    scores = model.score(_batch([session[0].numpy()], tiny_shop.catalog))[0]
    torch.testing.assert_close(scores[1:], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_loss_is_the_softmax_of_cosines_over_all_items_and_dropout_only_trains(tiny_shop, variant):
    model = _model(tiny_shop.catalog, variant)
    batch = _batch(_sessions(tiny_shop), tiny_shop.catalog)
    query, targets = model.encode_positions(batch)
    logits = query.vectors @ F.normalize(model.items.weight, dim=1).T
    out = model(batch)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits[:, 1:], targets - 1))
    assert out.category_loss.item() == 0.0 and out.loss.item() == out.item_loss.item()
    torch.manual_seed(3)
    trained = model.train()(batch)
    assert not torch.isclose(trained.loss, out.loss)  # session and item dropout act while training
    trained.loss.backward()
    assert model.items.weight.grad.abs().sum() > 0
