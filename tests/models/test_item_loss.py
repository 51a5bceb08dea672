"""The next-item losses of `train.loss`: exact ones equal today's kernel, sampled ones equal their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from hiersrec.config import DataConfig, RunConfig, TrainConfig, config_from_dict, load_config
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.errors import ConfigError
from hiersrec.eval.protocol import evaluate
from hiersrec.models._chunked_softmax import softmax_cross_entropy_sum
from hiersrec.models.gru4rec import GRU4RecConfig
from hiersrec.models.hiersrec import HierSRec, HierSRecConfig
from hiersrec.models.item_loss import (
    FULL_LOGITS_LIMIT,
    ItemLoss,
    draw_negatives,
    gbce_beta,
    gbce_sum,
    item_shares,
    sampled_softmax_sum,
)
from hiersrec.models.sasrec import SASRecConfig
from hiersrec.train.batches import SessionWindows, iter_epoch
from hiersrec.train.loop import train
from hiersrec.train.run import TrainingData, fit_run

V, N, D = 23, 9, 5
ITEM_GROUPS = torch.tensor([0] + [1 + i % 4 for i in range(V - 1)])


def _tensors(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(N, D, generator=generator, requires_grad=True)
    table = torch.randn(V, D, generator=generator, requires_grad=True)
    targets = torch.randint(1, V, (N,), generator=generator)
    targets[:3] = targets[3]  # repeated targets: one in-batch candidate for several rows
    return query, table, targets


def _value_and_grads(loss, *inputs):
    for tensor in inputs:
        tensor.grad = None
    value = loss()
    (2.5 * value).backward()
    return value.detach(), *[tensor.grad.clone() for tensor in inputs]


# -- the exact losses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["full", "chunked", "auto"])
@pytest.mark.parametrize("terms", ["plain", "target_groups", "group_bias"])
def test_exact_losses_equal_the_kernel_in_value_and_gradients(kind, terms):
    query, table, targets = _tensors()
    bias = torch.randn(N, 5, requires_grad=True)
    options = {
        "plain": {},
        "target_groups": {"item_groups": ITEM_GROUPS, "target_groups": ITEM_GROUPS[targets]},
        "group_bias": {"item_groups": ITEM_GROUPS, "group_bias": bias},
    }[terms]
    inputs = (query, table, bias) if terms == "group_bias" else (query, table)
    expected = _value_and_grads(
        lambda: softmax_cross_entropy_sum(query, table, targets, chunk_size=4, **options), *inputs
    )
    got = _value_and_grads(lambda: ItemLoss(kind)(query, table, targets, chunk_size=4, **options), *inputs)
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference)
    plain = F.cross_entropy((query @ table.T)[:, 1:], targets - 1, reduction="sum")  # padding is never a class
    if terms == "plain":
        torch.testing.assert_close(got[0], plain.detach())


@pytest.mark.parametrize("kind", ["full", "chunked"])
def test_label_smoothing_equals_torchs_in_value_and_gradients(kind):
    query, table, targets = _tensors()
    expected = _value_and_grads(
        lambda: F.cross_entropy((query @ table.T)[:, 1:], targets - 1, reduction="sum", label_smoothing=0.1),
        query, table,
    )  # fmt: skip
    smoothed = ItemLoss(kind, label_smoothing=0.1)
    got = _value_and_grads(lambda: smoothed(query, table, targets, chunk_size=4), query, table)
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference)
    unsmoothed = ItemLoss(kind)(query, table, targets, chunk_size=4)
    assert not torch.allclose(got[0], unsmoothed.detach())


def test_label_smoothing_refuses_the_losses_it_cannot_spread_over_every_item():
    query, table, targets = _tensors()
    with pytest.raises(ConfigError, match="scores a sample"):
        ItemLoss("sampled", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="within the target's category"):
        ItemLoss("chunked", label_smoothing=0.1)(
            query, table, targets, item_groups=ITEM_GROUPS, target_groups=ITEM_GROUPS[targets]
        )


def test_auto_materialises_the_logits_up_to_the_limit_only():
    auto = ItemLoss()
    assert auto.resolved(2048, FULL_LOGITS_LIMIT // 2048) == "full"
    assert auto.resolved(2048, FULL_LOGITS_LIMIT // 2048 + 1) == "chunked"
    assert auto.resolved(2048, 43_137) == "chunked"  # diginetica's catalogue: the kernel, as before
    assert ItemLoss("full").resolved(10**6, 10**6) == "full"


def test_under_bf16_autocast_the_products_run_in_bf16_and_the_loss_stays_float32():
    query, table, targets = _tensors(1)
    exact = softmax_cross_entropy_sum(query, table, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = ItemLoss("chunked")(query, table, targets)
        full = ItemLoss("full")(query, table, targets)
    kernel_bf16 = softmax_cross_entropy_sum(query, table, targets, compute_dtype=torch.bfloat16)
    assert chunked.dtype == full.dtype == torch.float32
    torch.testing.assert_close(chunked, kernel_bf16, rtol=0, atol=0)
    torch.testing.assert_close(full, exact, rtol=2e-2, atol=0)
    assert full.item() != exact.item()  # bf16 products, not float32 ones


# -- sampled softmax ------------------------------------------------------------------------------------------


def _sampled_reference(query, table, targets, negatives, shares):
    # Written out row by row: candidates, logQ-corrected logits, accidental hits dropped, cross-entropy.
    unique = sorted(set(targets.tolist()))
    candidates = unique + negatives.tolist()
    n_rows, n_uniform = len(targets), len(negatives)
    total = 0.0
    for row, target in enumerate(targets.tolist()):
        positive = unique.index(target)
        kept = []
        for column, item in enumerate(candidates):
            if item == target and column != positive:
                continue  # an accidental hit
            expected_count = n_rows * shares[item] + n_uniform / (V - 1)
            kept.append((column, float(query[row] @ table[item]) - math.log(expected_count)))
        logits = torch.tensor([value for _, value in kept], dtype=torch.float64)
        total -= float(logits[[c for c, _ in kept].index(positive)] - torch.logsumexp(logits, 0))
    return total


def test_sampled_softmax_equals_the_reference_written_plainly():
    query, table, targets = _tensors(2)
    counts = torch.arange(V) ** 2  # popular items late in the catalogue; item 0 (padding) and 1 get the floor 1
    negatives = torch.tensor([targets[5].item(), 7, 7, 11, targets[0].item(), 2])  # two accidental hits, a repeat
    shares = item_shares(counts)
    assert shares[0] == 0 and math.isclose(float(shares.sum()), 1.0, rel_tol=1e-6)
    loss = sampled_softmax_sum(query, table, targets, negatives, shares=shares)
    expected = _sampled_reference(query.detach(), table.detach(), targets, negatives, shares.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_item_loss_draws_its_negatives_from_its_generator_and_corrects_by_the_training_counts():
    query, table, targets = _tensors(3)
    counts = np.arange(V)
    loss = ItemLoss("sampled", negatives=6, item_counts=counts, generator=torch.Generator().manual_seed(4))
    negatives = draw_negatives(V, 6, torch.device("cpu"), torch.Generator().manual_seed(4))
    assert negatives.min() >= 1 and negatives.max() < V  # padding is never drawn
    expected = sampled_softmax_sum(query, table, targets, negatives, shares=item_shares(torch.from_numpy(counts)))
    torch.testing.assert_close(loss(query, table, targets), expected)


def test_an_accidental_hit_is_masked_as_if_its_column_were_not_there():
    query, table, _ = _tensors(5)
    targets = torch.full((N,), 4)  # every row's target: the drawn 4 is an accidental hit of every row
    with_hit = sampled_softmax_sum(query, table, targets, torch.tensor([9, 4, 13]))
    without = sampled_softmax_sum(query, table, targets, torch.tensor([9, 13]))
    # Without counts the correction is the same for every column, so the column's absence is all that differs.
    torch.testing.assert_close(with_hit, without)
    logits = query @ table[torch.tensor([4, 9, 4, 13])].T
    unmasked = F.cross_entropy(logits, torch.zeros(N, dtype=torch.int64), reduction="sum")
    assert unmasked.item() > with_hit.item() + 1e-3  # the masking mattered


def test_the_logq_correction_discounts_a_popular_negative_by_its_expected_count():
    # One row (target 1, score 1.0) and one uniform negative (item 2, score 2.0) among V = 5 items.
    table = torch.zeros(5, 1)
    table[1, 0], table[2, 0] = 1.0, 2.0
    query, targets, negatives = torch.ones(1, 1), torch.tensor([1]), torch.tensor([2])

    def hand_value(counts):  # -log softmax of the corrected logits, at the target's column
        share = [max(c, 1) / sum(max(c, 1) for c in counts[1:]) for c in counts]
        corrected = [score - math.log(share[item] + 1 / 4) for item, score in ((1, 1.0), (2, 2.0))]
        return -(corrected[0] - math.log(sum(math.exp(c) for c in corrected)))

    losses = {}
    for name, counts in {"rare negative": [0, 10, 1, 5, 5], "popular negative": [0, 10, 40, 5, 5]}.items():
        shares = item_shares(torch.tensor(counts))
        losses[name] = sampled_softmax_sum(query, table, targets, negatives, shares=shares).item()
        assert losses[name] == pytest.approx(hand_value(counts), rel=1e-6)
    # A popular item is an expected negative of many rows: its score counts for less against this row's target.
    assert losses["popular negative"] < losses["rare negative"]


# -- gBCE -----------------------------------------------------------------------------------------------------


def test_gbce_beta_is_the_papers():
    assert gbce_beta(100, 1002, t=0.0) == pytest.approx(1.0)
    assert gbce_beta(100, 1002, t=1.0) == pytest.approx(0.1)  # alpha = 100 / (1001 - 1)
    assert gbce_beta(100, 1002, t=0.75) == pytest.approx(0.1 * (0.75 * (1 - 1 / 0.1) + 1 / 0.1))
    assert gbce_beta(500, 40, t=0.75) == pytest.approx(1.0)  # more draws than negatives: alpha = 1


def test_gbce_with_t_0_is_plain_bce_over_the_same_negatives():
    query, table, targets = _tensors(6)
    negatives = torch.tensor([item for item in range(1, V) if item not in targets.tolist()][:4])  # no accidental hit
    loss = gbce_sum(query, table, targets, negatives, beta=gbce_beta(4, V, t=0.0))
    scores = torch.cat([(query * table[targets]).sum(1, keepdim=True), query @ table[negatives].T], dim=1)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(scores, labels, reduction="sum"))


def test_gbce_equals_the_hand_formula_and_accidental_hits_add_nothing():
    query, table, targets = _tensors(7)
    query, table = query.detach(), table.detach()
    negatives = torch.tensor([targets[4].item(), 5, 12, targets[8].item(), 17])
    alpha = 5 / (V - 2)
    beta = alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    expected = 0.0
    for row, target in enumerate(targets.tolist()):
        positive = float(query[row] @ table[target])
        expected -= beta * math.log(1 / (1 + math.exp(-positive)))
        for item in negatives.tolist():
            if item != target:
                expected -= math.log(1 - 1 / (1 + math.exp(-float(query[row] @ table[item]))))
    generator = torch.Generator().manual_seed(8)
    drawn = draw_negatives(V, 5, torch.device("cpu"), torch.Generator().manual_seed(8))
    assert gbce_sum(query, table, targets, negatives, beta=gbce_beta(5, V, 0.75)).item() == pytest.approx(expected)
    torch.testing.assert_close(
        ItemLoss("gbce", negatives=5, generator=generator)(query, table, targets),
        gbce_sum(query, table, targets, drawn, beta=beta),
    )


# -- large catalogues -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sampled", "gbce"])
def test_sampled_losses_never_hold_rows_by_items_scores(kind):
    n_items, n_rows = 2_000_000, 512  # (N, V) float32 scores would take 4 GB
    generator = torch.Generator().manual_seed(9)
    query = torch.randn(n_rows, 8, generator=generator, requires_grad=True)
    table = torch.randn(n_items, 8, generator=generator, requires_grad=True)
    targets = torch.randint(1, n_items, (n_rows,), generator=generator)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        ItemLoss(kind, negatives=256, generator=generator)(query, table, targets).backward()
    largest = max(event.cpu_memory_usage for event in recorded.events())
    # The table's own gradient (64 MB) is the largest allocation; the candidates' scores are (512, <= 768).
    assert largest <= n_items * 8 * 4 * 1.05, largest
    assert query.grad.abs().sum() > 0 and table.grad[targets].abs().sum() > 0


# -- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.loss=softmax"], "train.loss must be one of \\['auto', 'full', 'chunked', 'sampled', 'gbce'\\]"),
        (["train.negatives=0"], "train.negatives must be between 1 and"),
        (["train.gbce_t=1.5"], "train.gbce_t must be between 0 and 1"),
        (["train.gbce_t=nan"], "train.gbce_t must be between 0 and 1"),
        (["model.category_feed=factorised", "train.loss=sampled"], "use train.loss = 'auto', 'full' or 'chunked'"),
        (["model.category_feed=prior", "train.loss=gbce"], "model.category_feed = 'prior' needs every item's score"),
        (["model.name=gru4rec", "model.loss=bpr-max", "train.loss=gbce"], "keep train.loss = 'auto'"),
        (["model.name=gru4rec", "model.loss=bpr-max", "train.loss=full"], "GRU4Rec's own sampled loss"),
        (["train.label_smoothing=0.1", "train.loss=gbce"], "scores a sample of them"),
        (["train.label_smoothing=1.0"], "train.label_smoothing must be in \\[0, 1\\)"),
        (["model.category_feed=factorised", "train.label_smoothing=0.1"], "scores within categories"),
        (["model.name=gru4rec", "model.loss=bpr-max", "train.label_smoothing=0.1"], "no effect on model.loss"),
    ],
)
def test_bad_loss_settings_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_the_loss_settings_load_and_old_configs_get_the_defaults():
    config = load_config(overrides=["train.loss=gbce", "train.negatives=64", "train.gbce_t=0.5"])
    assert (config.train.loss, config.train.negatives, config.train.gbce_t) == ("gbce", 64, 0.5)
    assert config_from_dict(config.to_dict()) == config
    saved_before = config.to_dict()
    for key in ("loss", "negatives", "gbce_t"):
        del saved_before["train"][key]
    assert config_from_dict(saved_before).train == TrainConfig(**saved_before["train"])
    assert config_from_dict(saved_before).train.loss == "auto"
    assert load_config(overrides=["model.category_feed=factorised", "train.loss=chunked"]).train.loss == "chunked"
    with pytest.raises(ConfigError, match="train.loss must be one of"):
        TrainConfig(loss="sampled-softmax")


def test_the_loop_and_the_model_refuse_a_sampled_loss_for_a_factorised_feed(tiny_shop):
    model = HierSRec.from_config(HierSRecConfig(d_model=8, n_heads=1, category_feed="factorised"), tiny_shop.catalog)
    with pytest.raises(ConfigError, match="category_feed = 'factorised'"):
        train(model, tiny_shop.train, None, tiny_shop.catalog, TrainConfig(loss="sampled", show_progress=False))
    query, table, targets = _tensors()
    with pytest.raises(ConfigError, match="use train.loss = 'auto', 'full' or 'chunked'"):
        ItemLoss("gbce")(query, table, targets, item_groups=ITEM_GROUPS, target_groups=ITEM_GROUPS[targets])


# -- end to end -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring_shop():
    """Sessions that only walk their category's ring: the next item is a function of the current one."""
    config = SyntheticShopConfig(
        n_items=37, n_categories=5, n_groups=2, n_sessions=400, stay_prob=1.0, ring_prob=1.0, seed=5
    )
    return make_synthetic_shop(config)


# gBCE over a few negatives shared by the batch needs many more steps on SASRec's tied Transformer than these
# (its hr@1 stays near 0.2); GRU4Rec learns the ring with it in as many steps as with the softmax.
@pytest.mark.parametrize(
    ("model", "options"),
    [
        (SASRecConfig(d_model=32, n_heads=2, d_ff=64, max_len=7, dropout=0.0, input_dropout=0.0),
         {"loss": "sampled", "negatives": 8, "batch_targets": 256, "lr": 5e-3}),
        (GRU4RecConfig(d_model=32, max_len=7), {"loss": "gbce", "negatives": 16, "batch_targets": 64, "lr": 1e-2}),
    ],
    ids=["sasrec-sampled", "gru4rec-gbce"],
)  # fmt: skip
def test_a_model_trained_with_a_sampled_loss_learns_the_ring_successor(ring_shop, tmp_path, model, options):
    config = RunConfig(
        data=DataConfig(),
        model=model,
        train=TrainConfig(epochs=8, warmup_steps=5, show_progress=False, device="cpu", **options),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(ring_shop), tmp_path / "run")
    trained_with = artifact.model.item_loss
    assert (trained_with.kind, trained_with.negatives) == (options["loss"], options["negatives"])
    report = evaluate(artifact.model, ring_shop.test, ring_shop.catalog, ks=[1, 5], max_len=7)
    assert report.metrics["hr@1"] > 0.9, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_hiersrec_trains_its_item_head_with_a_sampled_loss(tiny_shop):
    torch.manual_seed(0)
    model = HierSRec.from_config(HierSRecConfig(d_model=16, n_heads=2, max_len=7), tiny_shop.catalog).eval()
    windows = SessionWindows.from_sessions(tiny_shop.train, 7)
    batch, target_mask = next(iter_epoch([np.arange(32)], windows, tiny_shop.catalog))
    model.item_loss = ItemLoss("sampled", negatives=4, generator=torch.Generator().manual_seed(0))
    out = model(batch, target_mask)  # eval mode: no dropout, so the queries below are the same
    query, targets = model.encode_positions(batch, target_mask)
    negatives = draw_negatives(model.config.n_items, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    expected = sampled_softmax_sum(query.vectors, model.item_output_embeddings(), targets, negatives)
    torch.testing.assert_close(out.item_loss, expected / targets.numel())
    out.loss.backward()
    assert model.item_encoder.ids.weight.grad.abs().sum() > 0
