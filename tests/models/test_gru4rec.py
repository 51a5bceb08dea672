"""GRU4Rec's own checks: known answers, the official losses and input options, whole-session = prefix training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiersrec.artifact import load_artifact
from hiersrec.config import DataConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.protocol import evaluate
from hiersrec.models.gru4rec import GRU4Rec, GRU4RecConfig, bpr_max_sum
from hiersrec.train.run import TrainingData, fit_run

INPUT_OPTIONS = {
    "constrained": {},
    "embedding": {"constrained_embedding": False, "embedding": 8},
    "one-hot": {"constrained_embedding": False, "n_layers": 2},
}


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


def _model(catalog, **options) -> GRU4Rec:
    torch.manual_seed(0)
    model = GRU4Rec.from_config(GRU4RecConfig(d_model=16, max_len=7, **options), catalog)
    with torch.no_grad():  # non-trivial weights, so that equalities cannot pass by zeros
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_it_learns_the_ring_successor(ring_shop, tmp_path, loss):
    config = RunConfig(
        data=DataConfig(),
        model=GRU4RecConfig(d_model=32, max_len=7, loss=loss, n_sample=64),
        train=TrainConfig(epochs=10, batch_targets=256, lr=1e-2, warmup_steps=5, show_progress=False, device="cpu"),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(ring_shop), tmp_path / "run")
    report = evaluate(artifact.model, ring_shop.test, ring_shop.catalog, ks=[1, 5], max_len=7)
    assert report.metrics["hr@1"] > 0.95, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    batch = _batch(_sessions(ring_shop), ring_shop.catalog)  # BPR-max's sampling counts are saved too
    assert torch.equal(load_artifact(tmp_path / "run").model.score(batch), artifact.model.score(batch))


@pytest.mark.parametrize("options", INPUT_OPTIONS.values(), ids=INPUT_OPTIONS.keys())
def test_the_whole_session_pass_scores_every_prefix_as_scoring_it_alone(tiny_shop, options):
    model = _model(tiny_shop.catalog, **options)
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


def test_the_cross_entropy_is_the_softmax_over_all_items_with_the_output_bias(tiny_shop):
    model = _model(tiny_shop.catalog)
    batch = _batch(_sessions(tiny_shop), tiny_shop.catalog)
    query, targets = model.encode_positions(batch)
    states = query.vectors[:, :-1]
    logits = states @ model.output_items.T + model.output_bias
    expected = F.cross_entropy(logits[:, 1:], targets - 1)
    out = model(batch)
    torch.testing.assert_close(out.loss, expected)
    assert out.category_loss.item() == 0.0 and out.loss.item() == out.item_loss.item()


def test_bpr_max_weights_every_column_but_the_own_target_by_the_negatives_softmax():
    torch.manual_seed(1)
    scores = torch.randn(3, 7)
    scores[0, 4] = scores[0, 0]  # another column holding row 0's target item stays a negative
    expected = torch.zeros(())
    for row in range(3):
        negatives = [j for j in range(7) if j != row]
        r = F.elu(scores[row], 0.5)
        weights = torch.softmax(r[negatives], dim=0)
        ranking = (torch.sigmoid(r[row] - r[negatives]) * weights).sum()
        expected = expected - torch.log(ranking + 1e-24) + 1.5 * (r[negatives] ** 2 * weights).sum()
    torch.testing.assert_close(bpr_max_sum(scores, 1.5, 0.5), expected)


def test_bpr_max_samples_only_items_seen_as_targets_and_trains(tiny_shop):
    model = _model(tiny_shop.catalog, loss="bpr-max", n_sample=500).train()
    batch = _batch(_sessions(tiny_shop), tiny_shop.catalog)
    _, targets = model.encode_positions(batch)
    samples = model._negative_samples(targets)
    assert set(samples.tolist()) <= set(targets.tolist())
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.output_items.grad.abs().sum() > 0


@pytest.mark.parametrize("truncated", [True, False])
def test_truncated_bptt_trains_a_click_through_its_own_step_only(tiny_shop, truncated):
    model = _model(tiny_shop.catalog, constrained_embedding=False, embedding=8, truncated_bptt=truncated)
    session = np.array([3, 9, 14, 20, 27])
    batch = _batch([session], tiny_shop.catalog)
    last_only = torch.zeros_like(batch.items, dtype=torch.bool)
    last_only[:, -1] = True
    model(batch, last_only).loss.backward()
    grads = model.input_items.grad
    assert grads[20].abs().sum() > 0  # the input of the last step
    earlier = grads[[3, 9, 14]].abs().sum()
    assert (earlier == 0) if truncated else (earlier > 0)


def _official_truncated_states(model: GRU4Rec, items: torch.Tensor, masks: list) -> torch.Tensor:
    # The official order of work: one click at a time for every layer, the state detached after each step.
    config = model.config
    batch, length = items.shape
    hidden = [torch.zeros(batch, config.d_model) for _ in range(config.n_layers)]
    table = model.input_items if config.embedding else model.output_items
    outputs = []
    for t in range(length):
        previous = [h.detach() for h in hidden]
        cells = list(model.cells)
        if config.one_hot_input:
            x = model.one_hot_layer(items[:, t], previous[0])
        else:
            x = F.embedding(items[:, t], table)
            x = cells.pop(0)(x, previous[0])
        x = x if masks[0] is None else x * masks[0][:, t]
        hidden[0] = x
        for layer, cell in enumerate(cells, start=1):
            x = cell(x, previous[layer])
            x = x if masks[layer] is None else x * masks[layer][:, t]
            hidden[layer] = x
        outputs.append(x)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("options", INPUT_OPTIONS.values(), ids=INPUT_OPTIONS.keys())
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_all_steps_at_once_equal_the_official_click_by_click_truncated_bptt(tiny_shop, options, dropout, monkeypatch):
    options = {"n_layers": 2, **options, "dropout_p_hidden": dropout}
    if options.get("constrained_embedding", True) is False and not options.get("embedding"):
        options["dropout_p_embed"] = dropout  # one-hot input: the first layer's output is dropped like an input
    model = _model(tiny_shop.catalog, **options).train()
    items = torch.tensor([[3, 9, 14, 20, 27], [5, 6, 0, 0, 0], [11, 2, 8, 0, 0]])
    torch.manual_seed(1)
    masks = model._state_dropout_masks(items.shape)
    assert all(m is None for m in masks) == (dropout == 0.0)
    monkeypatch.setattr(model, "_state_dropout_masks", lambda shape: masks)
    weights = torch.randn(3, 5, model.config.d_model)

    fast = model._states(items)
    (fast * weights).sum().backward()
    fast_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    official = _official_truncated_states(model, items, masks)
    (official * weights).sum().backward()

    torch.testing.assert_close(fast, official, rtol=1e-5, atol=1e-6)
    official_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert fast_grads.keys() == official_grads.keys() and fast_grads
    for name, grad in official_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # inference: the carried states alone, the same numbers
        torch.testing.assert_close(model._states(items), official.detach(), rtol=1e-5, atol=1e-6)
