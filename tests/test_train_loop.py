"""Training: rows of whole sessions = prefix augmentation, the loop, resuming, learning the synthetic shop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiersrec.config import TrainConfig
from hiersrec.data.batching import prefix_batch
from hiersrec.data.sessions import SessionData
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.errors import ArtifactError, ConfigError, TrainingDivergedError
from hiersrec.eval.protocol import evaluate
from hiersrec.train.batches import SessionWindows
from hiersrec.train.loop import train
from hiersrec.train.optim import lr_factor, parameter_groups
from hiersrec.train.validate import validation_metrics
from hiersrec_support import MAX_LEN
from hiersrec_support import build_model as build

TIMING_KEYS = ("train_seconds", "train_cpu_seconds", "targets_per_second", "sessions_per_second", "validation_seconds")


def fast(**overrides) -> TrainConfig:
    options = {"epochs": 3, "batch_targets": 64, "warmup_steps": 5, "show_progress": False, "device": "cpu"}
    return TrainConfig(**{**options, **overrides})


def test_rows_cover_every_target_once_with_its_truncated_prefix(tiny_shop):
    sessions = SessionData.from_lists([[1, 2], [3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [15, 16, 17]])
    windows = SessionWindows.from_sessions(sessions, max_len=4)
    assert windows.target_positions().tolist() == sessions.target_positions().tolist()
    assert windows.n_targets_total == 1 + 10 + 2
    # The long session: one row of 5 clicks (4 targets), then one row per later target with 4 clicks before it.
    long_rows = np.flatnonzero((windows.starts >= 3) & (windows.starts < 14))
    assert windows.lengths[long_rows].tolist() == [5, 5, 5, 5, 5, 5, 5]
    assert windows.n_targets[long_rows].tolist() == [4, 1, 1, 1, 1, 1, 1]
    batch, mask = windows.batch(long_rows[:2], tiny_shop.catalog)
    assert batch.items.tolist() == [[4, 5, 6, 7, 8], [5, 6, 7, 8, 9]]
    assert mask.tolist() == [[False, True, True, True, True], [False, False, False, False, True]]


def test_whole_session_rows_train_on_exactly_the_prefix_cases(tiny_shop):
    # Every (prefix truncated to max_len, next item) case of prefix augmentation, and nothing else.
    model = build(tiny_shop.catalog).eval()
    sessions = tiny_shop.train.subset(np.arange(60))
    assert sessions.lengths.max() > MAX_LEN + 1  # long sessions included
    windows = SessionWindows.from_sessions(sessions, MAX_LEN)
    queries, targets = [], []
    for rows in windows.epoch_batches(50, np.random.default_rng(0)):
        batch, mask = windows.batch(np.sort(rows), tiny_shop.catalog)
        out = model(batch, mask)
        queries.append(out.item_query.detach())
        targets.append(_target_positions(windows, np.sort(rows)))
    order = np.argsort(np.concatenate(targets))
    positions = np.concatenate(targets)[order]
    assert positions.tolist() == sessions.target_positions().tolist()
    expected = model.query(prefix_batch(sessions, tiny_shop.catalog, positions, MAX_LEN)).vectors
    torch.testing.assert_close(torch.cat(queries)[torch.from_numpy(order)], expected, rtol=1e-5, atol=1e-5)


def _target_positions(windows, rows):
    # Flat positions of the targets of `rows`, in the order `HierSRec.forward` returns them (row-major).
    ends = windows.starts[rows] + windows.lengths[rows]
    return np.concatenate([np.arange(end - k, end) for end, k in zip(ends, windows.n_targets[rows], strict=True)])


@pytest.mark.parametrize(
    ("feed", "protocol"), [("concat", "all_prefixes"), ("factorised", "all_prefixes"), ("concat", "last_item")]
)
def test_fast_validation_equals_the_evaluator(small_shop, feed, protocol):
    model = build(small_shop.catalog, category_feed=feed).eval()
    valid = small_shop.test.subset(np.arange(120))
    fast_metrics = validation_metrics(model, valid, small_shop.catalog, ks=(5, 20), protocol=protocol, batch_targets=37)
    reference = evaluate(model, valid, small_shop.catalog, ks=(5, 20), protocol=protocol, max_len=MAX_LEN).metrics
    assert fast_metrics.keys() == reference.keys()
    for name, value in reference.items():
        assert fast_metrics[name] == pytest.approx(value, abs=1e-6), name


def test_epoch_batches_hold_about_the_target_budget_and_cover_all_rows(tiny_shop):
    windows = SessionWindows.from_sessions(tiny_shop.train, MAX_LEN)
    batches = windows.epoch_batches(40, np.random.default_rng(3))
    assert np.sort(np.concatenate(batches)).tolist() == list(range(windows.n_rows))
    sizes = [windows.n_targets[rows].sum() for rows in batches]
    assert max(sizes) < 40 + MAX_LEN and np.median(sizes) >= 34


def test_learning_rate_schedule():
    assert [round(lr_factor(s, 2, 6, "cosine"), 3) for s in range(7)] == [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    assert lr_factor(10, 2, 6, "linear", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(100, 0, 6, "constant") == 1.0


def test_no_weight_decay_on_embeddings_norms_and_biases(tiny_shop):
    model = build(tiny_shop.catalog)
    decay, no_decay = parameter_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.item_encoder.ids.weight) not in decayed and id(model.positions.weight) not in decayed
    assert id(model.blocks[0].norm_ff.weight) not in decayed and id(model.blocks[0].qkv.bias) not in decayed
    assert id(model.blocks[0].qkv.weight) in decayed and id(model.category_head.weight) in decayed
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_loss_goes_down_and_the_best_epoch_is_kept(tiny_shop):
    fit, valid = tiny_shop.validation_split(0.2)
    model = build(tiny_shop.catalog)
    result = train(model, fit, valid, tiny_shop.catalog, fast(epochs=4, lr=3e-3))
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < losses[0] - 0.5
    mrrs = [record["valid_mrr@20"] for record in result.history]
    assert result.best_epoch == int(np.argmax(mrrs)) + 1 and result.best_metrics["mrr@20"] == max(mrrs)
    model.load_state_dict(result.best_state)
    again = evaluate(model.eval(), valid, tiny_shop.catalog, ks=(20,), max_len=MAX_LEN)
    assert again.metrics["mrr@20"] == pytest.approx(max(mrrs))


def test_early_stopping_after_patience_epochs_without_improvement(tiny_shop):
    fit, valid = tiny_shop.validation_split(0.2)
    model = build(tiny_shop.catalog)
    # A learning rate this small changes nothing measurable: no later epoch beats the first one.
    result = train(model, fit, valid, tiny_shop.catalog, fast(epochs=10, lr=1e-12, patience=2))
    assert result.stopped_early and len(result.history) == 1 + 2 and result.best_epoch == 1


def test_nan_loss_raises_training_diverged_with_the_step(tiny_shop):
    fit, valid = tiny_shop.validation_split(0.2)
    model = build(tiny_shop.catalog)
    with torch.no_grad():
        model.final_norm.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="epoch 1, step 1"):
        train(model, fit, valid, tiny_shop.catalog, fast())


def test_resumed_run_ends_exactly_like_an_uninterrupted_run(tiny_shop, tmp_path):
    fit, valid = tiny_shop.validation_split(0.2)
    config = fast(epochs=3, seed=5, lr=3e-3)
    uninterrupted = train(build(tiny_shop.catalog), fit, valid, tiny_shop.catalog, config, run_dir=tmp_path / "a")

    def crash_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(build(tiny_shop.catalog), fit, valid, tiny_shop.catalog, config, run_dir=tmp_path / "b",
              on_epoch_end=crash_after_first_epoch)  # fmt: skip
    other_init = build(tiny_shop.catalog, seed=99)  # weights come from the checkpoint, not from here
    resumed = train(other_init, fit, valid, tiny_shop.catalog, config, run_dir=tmp_path / "b", resume=True)
    assert resumed.best_epoch == uninterrupted.best_epoch
    for name, tensor in uninterrupted.best_state.items():
        assert torch.equal(tensor, resumed.best_state[name]), name
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in uninterrupted.history]
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in resumed.history] == strip


def test_resume_without_a_checkpoint_is_an_artifact_error(tiny_shop, tmp_path):
    fit, valid = tiny_shop.validation_split(0.2)
    with pytest.raises(ArtifactError, match="no checkpoint.pt"):
        train(build(tiny_shop.catalog), fit, valid, tiny_shop.catalog, fast(), run_dir=tmp_path, resume=True)


def test_bad_train_options_fail_before_training():
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="train.batch_targets"):
        TrainConfig(batch_targets=0)


@pytest.mark.slow
def test_a_tiny_model_learns_the_synthetic_shop(tiny_shop):
    # With ring_prob = 1 the next item is the ring successor (stay) or the next category's first item (jump):
    # two candidates, the category deciding between them, so HR@2 must be near 1 and HR@1 near stay_prob.
    fit, valid = tiny_shop.validation_split(0.1)
    model = build(tiny_shop.catalog, d_model=32, dropout=0.0, input_dropout=0.0)
    train(model, fit, valid, tiny_shop.catalog, fast(epochs=20, lr=1e-2, batch_targets=128, patience=20))
    metrics = evaluate(model.eval(), tiny_shop.test, tiny_shop.catalog, ks=(1, 2), max_len=MAX_LEN).metrics
    assert metrics["hr@2"] > 0.93 and metrics["hr@1"] > 0.7
    assert metrics["cat_acc@1"] > 0.75  # the category only changes on jumps (1 - stay_prob = 0.2)


@pytest.mark.slow
def test_the_category_feed_helps_where_the_next_category_determines_the_next_item():
    # Mostly jumps (stay_prob 0.3) to the successor category's most popular item, and few sessions for 400
    # items: predicting the category first and the item within it (factorised feed) beats learning each
    # item-to-item transition (flat multi-task, same category loss), by a wide margin on every cutoff.
    shop = make_synthetic_shop(
        SyntheticShopConfig(n_items=400, n_categories=40, n_groups=4, n_sessions=300, ring_prob=0.0,
                            zipf_exponent=2.0, stay_prob=0.3, group_prob=1.0, seed=3)
    )  # fmt: skip
    fit, valid = shop.validation_split(0.1)
    results = {}
    for feed in ("none", "factorised"):
        model = build(shop.catalog, category_feed=feed, use_category_input=False, dropout=0.1, input_dropout=0.1)
        train(model, fit, valid, shop.catalog, fast(epochs=15, lr=1e-2, batch_targets=128, patience=15))
        results[feed] = evaluate(model.eval(), shop.test, shop.catalog, ks=(1, 20), max_len=MAX_LEN).metrics
    assert results["factorised"]["hr@1"] > results["none"]["hr@1"] + 0.15
    assert results["factorised"]["mrr@20"] > results["none"]["mrr@20"] + 0.08


def test_progress_written_to_a_log_is_a_few_whole_lines(tiny_shop, capsys):
    # issue 9: a redraw per step (117 kB of frames in the quickstart's stderr) flooded files and CI logs.
    fit, valid = tiny_shop.validation_split(0.2)
    train(build(tiny_shop.catalog), fit, valid, tiny_shop.catalog, fast(epochs=3, show_progress=True))
    written = capsys.readouterr().err  # not a terminal
    steps = len(SessionWindows.from_sessions(fit, MAX_LEN).epoch_batches(64, np.random.default_rng(0)))
    assert "\r" not in written and steps > 10
    assert 1 <= written.count("\n") <= 3 * 2  # about one line an epoch here, not one a step
