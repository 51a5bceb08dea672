"""Non-neural baselines: the contract every one meets, hand-computed scores, and structure recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ConfigError, NotFittedError
from hiersrec.eval.protocol import evaluate
from hiersrec.models import BASELINES, default_params, make_baseline, search_space
from hiersrec.models.markov import Markov
from hiersrec.models.sr import SequentialRules

PREFIXES = [[3], [5, 6, 7, 5], [1, 2], [9, 1, 9, 2, 3, 4, 8], [30], [2, 2, 2], [17, 18, 19, 20, 21]]
"""Prefixes of varied lengths over tiny_shop's 37 items, with repeats (B = 7)."""


def _scorer(model):
    return model.score if hasattr(model, "score") else model.score_categories


def _batch(sessions: list[list[int]], catalog: ItemCatalog, width: int = 0):
    items, lengths = left_pad(sessions, max_len=50)
    if width > items.shape[1]:  # extra padding columns on the left
        items = np.pad(items, ((0, 0), (width - items.shape[1], 0)))
    return make_batch(items, lengths, catalog)


def _catalog(n_items: int, n_categories: int = 1) -> ItemCatalog:
    category = np.concatenate([[0], 1 + np.arange(n_items) % n_categories])
    text = ("", *(f"item{i} shade{i % 3}" for i in range(1, n_items + 1)))  # for the content model (textknn)
    return ItemCatalog(item_category=category.astype(np.int64), n_categories=n_categories, text=text)


def _scores(model, sessions: list[list[int]], catalog: ItemCatalog) -> np.ndarray:
    return _scorer(model)(_batch(sessions, catalog)).numpy()


# ---------------------------------------------------------------- the contract, for every baseline


@pytest.fixture(scope="module", params=sorted(BASELINES))
def fitted(request, tiny_shop: PreparedDataset):
    return request.param, make_baseline(request.param).fit(tiny_shop.train, tiny_shop.catalog)


def test_fit_returns_self_and_scores_have_the_contract_shape(fitted, tiny_shop):
    name, model = fitted
    scores = _scorer(model)(_batch(PREFIXES, tiny_shop.catalog))
    width = tiny_shop.catalog.n_categories + 1 if name == "last_category" else tiny_shop.catalog.n_items + 1
    assert scores.shape == (len(PREFIXES), width) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    unfitted = make_baseline(name)
    assert unfitted.fit(tiny_shop.train, tiny_shop.catalog) is unfitted


def test_scoring_before_fit_raises_not_fitted(fitted, tiny_shop):
    name, _ = fitted
    with pytest.raises(NotFittedError, match="fit"):
        _scorer(make_baseline(name))(_batch(PREFIXES, tiny_shop.catalog))


def test_a_batch_scores_exactly_like_its_rows_one_at_a_time(fitted, tiny_shop):
    _, model = fitted
    together = _scores(model, PREFIXES, tiny_shop.catalog)
    alone = np.concatenate([_scores(model, [prefix], tiny_shop.catalog) for prefix in PREFIXES])
    np.testing.assert_array_equal(together, alone)


def test_left_padding_does_not_change_scores(fitted, tiny_shop):
    _, model = fitted
    plain = _scorer(model)(_batch(PREFIXES, tiny_shop.catalog)).numpy()
    padded = _scorer(model)(_batch(PREFIXES, tiny_shop.catalog, width=12)).numpy()
    np.testing.assert_array_equal(plain, padded)


def test_refitting_gives_the_same_scores(fitted, tiny_shop):
    name, model = fitted
    again = make_baseline(name).fit(tiny_shop.train, tiny_shop.catalog)
    np.testing.assert_array_equal(
        _scores(model, PREFIXES, tiny_shop.catalog), _scores(again, PREFIXES, tiny_shop.catalog)
    )


def test_empty_prefix_and_unseen_item_score_without_error(fitted):
    name, _ = fitted
    catalog = _catalog(9, n_categories=3)
    model = make_baseline(name).fit(SessionData.from_lists([[1, 2, 3], [2, 3, 4]]), catalog)  # 5..9 never clicked
    items, lengths = np.array([[0, 0], [0, 8], [2, 9]]), np.array([0, 1, 2])
    scores = _scorer(model)(make_batch(items, lengths, catalog))
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    for row in range(3):  # alone, a batch may have no known item at all
        alone = _scorer(model)(make_batch(items[row : row + 1], lengths[row : row + 1], catalog))
        np.testing.assert_array_equal(alone.numpy(), scores[row : row + 1].numpy())


def test_describe_names_the_model_and_rebuilds_it(fitted):
    name, model = fitted
    described = model.describe()
    assert described.pop("name") == name
    assert described == default_params(name)
    assert make_baseline(name, **described).describe() == model.describe()


def test_search_space_names_only_real_parameters():
    for name in BASELINES:
        assert set(search_space(name)) <= set(default_params(name)), name


def test_make_baseline_rejects_unknown_names_and_parameters_with_a_hint():
    with pytest.raises(ConfigError, match="Did you mean 'sknn'"):
        make_baseline("sknm")
    with pytest.raises(ConfigError, match="Did you mean 'sample_size'"):
        make_baseline("sknn", sample_sise=10)
    with pytest.raises(ConfigError, match="takes no parameters"):
        make_baseline("pop", k=3)


@pytest.mark.parametrize(
    ("name", "params"),
    [("sknn", {"k": 0}), ("sknn", {"similarity": "dice"}), ("vsknn", {"weighting": "cubic"}), ("sr", {"steps": 1.5})],
)
def test_bad_hyperparameter_values_fail_at_fit(name, params, tiny_shop):
    with pytest.raises(ConfigError, match=next(iter(params))):
        make_baseline(name, **params).fit(tiny_shop.train, tiny_shop.catalog)


# ---------------------------------------------------------------- hand-computed scores


def test_pop_scores_training_click_counts():
    catalog = _catalog(4)
    model = make_baseline("pop").fit(SessionData.from_lists([[1, 2, 2], [2, 3]]), catalog)
    np.testing.assert_array_equal(_scores(model, [[4], [1]], catalog)[:, 1:], [[1, 3, 1, 0], [1, 3, 1, 0]])


def test_spop_ranks_prefix_items_by_count_then_popularity():
    catalog = _catalog(5)
    model = make_baseline("spop").fit(SessionData.from_lists([[1, 2, 2, 2], [2, 3, 3], [4]]), catalog)
    scores = _scores(model, [[4, 1, 4, 3]], catalog)[0]
    order = np.argsort(-scores[1:], kind="stable") + 1
    # 4 clicked twice; 3 and 1 once each, 3 more popular (2 clicks vs 1); then 2 (popular), then 5 (never)
    assert order.tolist() == [4, 3, 1, 2, 5]


def test_markov_counts_transitions_from_the_last_click():
    catalog = _catalog(4)
    model = make_baseline("markov").fit(SessionData.from_lists([[1, 2, 1, 3], [1, 2], [4, 1]]), catalog)
    np.testing.assert_array_equal(_scores(model, [[3, 1]], catalog)[0, 1:], [0, 2, 1, 0])


def test_sequential_rules_weights_by_gap_and_prunes():
    catalog = _catalog(4)
    train = SessionData.from_lists([[1, 2, 3, 4], [1, 3]])
    model = make_baseline("sr", steps=2, weighting="div", pruning=0).fit(train, catalog)
    # from 1: 1->2 gap 1 (1), 1->3 gap 2 (1/2) and gap 1 in the second session (1); 1->4 is 3 steps away
    np.testing.assert_allclose(_scores(model, [[1]], catalog)[0, 1:], [0, 1, 1.5, 0])
    quadratic = make_baseline("sr", steps=3, weighting="quadratic", pruning=0).fit(train, catalog)
    np.testing.assert_allclose(_scores(quadratic, [[1]], catalog)[0, 1:], [0, 1, 1.25, 1 / 9])
    pruned = make_baseline("sr", steps=3, weighting="quadratic", pruning=1).fit(train, catalog)
    np.testing.assert_allclose(_scores(pruned, [[1]], catalog)[0, 1:], [0, 0, 1.25, 0])


def test_markov_is_sequential_rules_with_one_step(small_shop):
    rules = SequentialRules(steps=1, weighting="same", pruning=0).fit(small_shop.train, small_shop.catalog)
    markov = Markov().fit(small_shop.train, small_shop.catalog)
    prefixes = [small_shop.test.session(s)[:3].tolist() for s in range(20)]
    np.testing.assert_array_equal(
        _scores(markov, prefixes, small_shop.catalog), _scores(rules, prefixes, small_shop.catalog)
    )


def test_itemknn_is_the_shrunk_cosine_of_session_co_occurrence():
    catalog = _catalog(4)
    train = SessionData.from_lists([[1, 2], [1, 3, 1], [1, 2, 3]])  # supports 1:3 2:2 3:2; co(1,2)=2 co(1,3)=2
    cosine = make_baseline("itemknn", alpha=0.5, lmbd=0).fit(train, catalog)
    np.testing.assert_allclose(_scores(cosine, [[1]], catalog)[0, 1:], [0, 2 / math.sqrt(6), 2 / math.sqrt(6), 0])
    np.testing.assert_allclose(_scores(cosine, [[2]], catalog)[0, 1:], [2 / math.sqrt(6), 0, 1 / 2, 0], rtol=1e-6)
    shrunk = make_baseline("itemknn", alpha=1.0, lmbd=1).fit(train, catalog)  # co / (supp(i) + 1)
    np.testing.assert_allclose(_scores(shrunk, [[2]], catalog)[0, 1:], [2 / 3, 0, 1 / 3, 0], rtol=1e-6)


KNN_TRAIN = [[1, 2], [2, 3, 4], [5, 6], [2, 6]]
"""Sessions 0..3, oldest first (no timestamps: file order is time order)."""


def test_sknn_sums_cosine_or_jaccard_similarities_of_neighbours():
    catalog = _catalog(7)
    train = SessionData.from_lists(KNN_TRAIN)
    # prefix {2, 6}: candidates 0 ({1,2}: 1 shared), 1 ({2,3,4}: 1), 2 ({5,6}: 1), 3 ({2,6}: 2)
    cos = [1 / 2, 1 / math.sqrt(6), 1 / 2, 1.0]
    model = make_baseline("sknn", k=10, sample_size=None).fit(train, catalog)
    expected = [cos[0], cos[0] + cos[1] + cos[3], cos[1], cos[1], cos[2], cos[2] + cos[3], 0]
    np.testing.assert_allclose(_scores(model, [[2, 6]], catalog)[0, 1:], expected, rtol=1e-6)
    jac = [1 / 3, 1 / 4, 1 / 3, 1.0]
    jaccard = make_baseline("sknn", k=10, sample_size=None, similarity="jaccard").fit(train, catalog)
    expected = [jac[0], jac[0] + jac[1] + jac[3], jac[1], jac[1], jac[2], jac[2] + jac[3], 0]
    np.testing.assert_allclose(_scores(jaccard, [[2, 6]], catalog)[0, 1:], expected, rtol=1e-6)


def test_sknn_keeps_the_k_most_similar_and_samples_the_most_recent():
    catalog = _catalog(7)
    train = SessionData.from_lists(KNN_TRAIN)
    one_neighbour = make_baseline("sknn", k=1, sample_size=None).fit(train, catalog)
    np.testing.assert_allclose(_scores(one_neighbour, [[2, 6]], catalog)[0, 1:], [0, 1, 0, 0, 0, 1, 0])
    # the two most recent candidates of prefix {2} are sessions 1 and 3; session 0 is not sampled
    recent = make_baseline("sknn", k=10, sample_size=2).fit(train, catalog)
    c1, c3 = 1 / math.sqrt(3), 1 / math.sqrt(2)
    np.testing.assert_allclose(_scores(recent, [[2]], catalog)[0, 1:], [0, c1 + c3, c1, c1, 0, c3, 0], rtol=1e-6)


def test_sample_recency_follows_timestamps_when_there_are_some():
    catalog = _catalog(7)
    # session 0 is the most recent by its last click, so the sample of size 1 for prefix {2} is session 0
    train = SessionData.from_lists(KNN_TRAIN)
    stamps = np.array([900, 901, 100, 101, 102, 200, 201, 300, 301], dtype=np.int64)
    train = SessionData(offsets=train.offsets, items=train.items, timestamps=stamps)
    model = make_baseline("sknn", k=10, sample_size=1).fit(train, catalog)
    np.testing.assert_allclose(_scores(model, [[2]], catalog)[0, 1:], [1, 1, 0, 0, 0, 0, 0] / np.sqrt(2), rtol=1e-6)


def test_vsknn_weights_by_position_and_decays_by_steps_back():
    catalog = _catalog(7)
    train = SessionData.from_lists([[1, 5], [2, 6]])
    model = make_baseline("vsknn", k=10, sample_size=None, weighting="div", weighting_score="div").fit(train, catalog)
    # prefix [1, 2]: w(1) = 1/2, w(2) = 2/2; |P| = 2. Session 0 shares item 1: sim 1/4, one step further back
    # (decay 1/2); session 1 shares item 2: sim 1/2, decay 1.
    expected = [1 / 8, 1 / 2, 0, 0, 1 / 8, 1 / 2, 0]
    np.testing.assert_allclose(_scores(model, [[1, 2]], catalog)[0, 1:], expected, rtol=1e-6)
    idf = make_baseline("vsknn", k=10, sample_size=None, idf_weight=2.0).fit(train, catalog)
    boost = 1 + 2 * math.log(2 / 1)  # every item is clicked once in 2 sessions
    np.testing.assert_allclose(_scores(idf, [[1, 2]], catalog)[0, 1:], np.array(expected) * boost, rtol=1e-6)


def test_stan_similarity_and_item_weights():
    catalog = _catalog(7)
    train = SessionData.from_lists([[1, 5, 7], [6, 2]])
    model = make_baseline("stan", k=10, sample_size=None, lambda_spw=1.0, lambda_snh=None, lambda_inh=1.0)
    model.fit(train, catalog)
    # prefix [1, 2]: weights e^-1 (item 1) and 1 (item 2), norm sqrt(e^-2 + 1)
    norm = math.sqrt(math.exp(-2) + 1)
    sim0, sim1 = math.exp(-1) / (norm * math.sqrt(3)), 1 / (norm * math.sqrt(2))
    # session 0 matches at its position 1 (item 1): items at distances 0, 1, 2; session 1 at position 2 (item 2)
    expected = [sim0, sim1, 0, 0, sim0 * math.exp(-1), sim1 * math.exp(-1), sim0 * math.exp(-2)]
    np.testing.assert_allclose(_scores(model, [[1, 2]], catalog)[0, 1:], expected, rtol=1e-6)


def test_stan_recency_decay_uses_session_age_in_days():
    catalog = _catalog(7)
    day = 86_400
    train = SessionData(
        offsets=np.array([0, 2, 4]), items=np.array([1, 3, 1, 4]), timestamps=np.array([0, 10, 2 * day, 2 * day + 10])
    )
    model = make_baseline("stan", k=10, sample_size=None, lambda_spw=None, lambda_snh=1.0, lambda_inh=None)
    scores = _scores(model.fit(train, catalog), [[1]], catalog)[0, 1:]
    # both sessions match item 1 with cosine 1/sqrt(2); the one with item 3 is 2 days older: factor e^-2
    assert scores[2] / scores[3] == pytest.approx(math.exp(-2), rel=1e-5)


def test_vstan_adds_recency_of_the_match_and_idf():
    catalog = _catalog(7)
    train = SessionData.from_lists([[1, 5], [2, 6]])
    plain = dict(k=10, sample_size=None, lambda_spw=None, lambda_snh=None, lambda_inh=None)
    stan = make_baseline("stan", **plain).fit(train, catalog)
    vstan = make_baseline("vstan", **plain, lambda_ipw=1.0, lambda_idf=0).fit(train, catalog)
    # prefix [1, 2]: session 0 matches one click back (factor e^-1), session 1 at the last click (factor 1)
    factor = np.array([math.exp(-1), 1, 0, 0, math.exp(-1), 1, 0])
    np.testing.assert_allclose(
        _scores(vstan, [[1, 2]], catalog)[0, 1:], _scores(stan, [[1, 2]], catalog)[0, 1:] * factor, rtol=1e-6
    )
    idf = make_baseline("vstan", **plain, lambda_ipw=None, lambda_idf=3.0).fit(train, catalog)
    np.testing.assert_allclose(
        _scores(idf, [[1, 2]], catalog)[0, 1:],
        _scores(stan, [[1, 2]], catalog)[0, 1:] * (1 + 3 * math.log(2)),
        rtol=1e-6,
    )


def test_last_category_puts_the_last_category_first_then_popularity():
    catalog = _catalog(6, n_categories=3)  # item i has category 1 + (i - 1) % 3
    model = make_baseline("last_category").fit(SessionData.from_lists([[1, 4, 2], [5, 5, 3]]), catalog)
    scores = model.score_categories(_batch([[3, 1], [1, 3]], catalog)).numpy()
    assert np.argsort(-scores[0, 1:]).tolist() == [0, 1, 2]  # last click in category 1, then 2 (3 clicks), 3
    assert np.argsort(-scores[1, 1:]).tolist() == [2, 1, 0]  # last click in category 3, then 2, then 1


# ---------------------------------------------------------------- structure recovery on data built for each


def _dataset(train: list[list[int]], test: list[list[int]], n_items: int) -> PreparedDataset:
    return PreparedDataset(
        name="handmade",
        train=SessionData.from_lists(train),
        test=SessionData.from_lists(test),
        vocab=Vocab.from_raw([str(i) for i in range(1, n_items + 1)], ["c"]),
        catalog=_catalog(n_items),
    )


def _metric(name: str, data: PreparedDataset, metric: str, **params) -> float:
    model = make_baseline(name, **params).fit(data.train, data.catalog)
    k = int(metric.split("@")[1])
    return evaluate(model, data.test, data.catalog, ks=(k,)).metrics[metric]


@pytest.mark.parametrize("name", ["markov", "sr"])
def test_transition_models_follow_the_ring_of_tiny_shop(name, tiny_shop):
    # the next item is the ring successor or the next category's first item: two candidates at most
    assert _metric(name, tiny_shop, "hr@2") >= 0.9
    assert _metric("pop", tiny_shop, "hr@2") <= 0.3


def _templates(n_templates: int, size: int, copies: int, rng: np.random.Generator) -> list[list[int]]:
    # disjoint fixed click sequences of `size` items, each seen `copies` times, in random order
    sessions = [list(range(1 + t * size, 1 + (t + 1) * size)) for t in range(n_templates) for _ in range(copies)]
    return [sessions[i] for i in rng.permutation(len(sessions))]


@pytest.fixture(scope="module")
def templates() -> PreparedDataset:
    rng = np.random.default_rng(0)
    return _dataset(_templates(12, 5, 8, rng), _templates(12, 5, 1, rng), n_items=60)


@pytest.mark.parametrize("name", ["sknn", "vsknn", "stan", "vstan"])
def test_session_knn_recovers_the_template_of_a_session(name, templates):
    # every neighbour is a copy of the prefix's template: its 5 items share the top (pessimistic ties)
    assert _metric(name, templates, "hr@5") == 1.0
    assert _metric("pop", templates, "hr@5") <= 0.2


@pytest.mark.parametrize("name", ["stan", "vstan"])
def test_stan_ranks_items_near_the_last_click_first(name, templates):
    # the last click (distance 0), then its template neighbours (distance 1): the next click ranks <= 3,
    # while SKNN ties all 5 template items
    assert _metric(name, templates, "hr@3") == 1.0
    assert _metric("sknn", templates, "hr@3") == 0.0


def test_vsknn_follows_the_latest_topic_where_sknn_follows_the_popular_one():
    # topics of 3 items; training sessions stay in one topic; topic 0 has 3x the sessions of the others.
    # Test prefixes click topic 0 then topic t: the next click stays in topic t.
    topic = [[1 + 3 * t + i for i in range(3)] for t in range(6)]
    train = [topic[0]] * 30 + [s for s in topic[1:] for _ in range(10)]
    test = [[topic[0][0], topic[t][0], topic[t][1]] for t in range(1, 6)]
    data = _dataset(train, test, n_items=18)
    # last-item protocol: prefix [0a, ta] -> target tb. V-SKNN: topic-0 neighbours 30 x (1/4 similarity x 1/2
    # decay) = 3.75 per item < topic-t neighbours 10 x 1/2 = 5; SKNN: 30 vs 10 neighbours of equal similarity.
    for name, expected in (("vsknn", 1.0), ("sknn", 0.0)):
        model = make_baseline(name, sample_size=None).fit(data.train, data.catalog)
        assert evaluate(model, data.test, data.catalog, ks=(3,), protocol="last_item").metrics["hr@3"] == expected


def test_itemknn_finds_the_partner_of_an_item():
    rng = np.random.default_rng(1)
    pairs = [[2 * p + 1, 2 * p + 2] for p in range(20)]
    train = [pairs[p] if rng.random() < 0.5 else pairs[p][::-1] for p in rng.integers(0, 20, 400)]
    test = [pairs[p] if rng.random() < 0.5 else pairs[p][::-1] for p in range(20)]
    data = _dataset(train, test, n_items=40)
    assert _metric("itemknn", data, "hr@1") == 1.0
    assert _metric("pop", data, "hr@1") <= 0.2


def test_spop_recommends_what_the_session_keeps_returning_to():
    rng = np.random.default_rng(2)
    # sessions alternate between two items a, b: a b a b a b; after two clicks the next one is in the session
    couples = [rng.choice(np.arange(1, 41), 2, replace=False) for _ in range(200)]
    sessions = [[int(a), int(b)] * 3 for a, b in couples]
    data = _dataset(sessions[:150], sessions[150:], n_items=40)
    hr2 = _metric("spop", data, "hr@2")
    assert hr2 >= 0.8  # 4 of every session's 5 prefixes have two clicks or more
    assert _metric("pop", data, "hr@2") <= 0.3


def test_pop_hit_rate_is_the_share_of_targets_on_the_most_popular_item():
    train = [[1, 2]] * 6 + [[3, 1]] * 3 + [[4, 5]]  # item 1 is the most clicked (9)
    test = [[2, 1], [3, 1], [5, 4], [1, 2]]  # targets 1, 1, 4, 2: two of four are item 1
    assert _metric("pop", _dataset(train, test, n_items=5), "hr@1") == 0.5


def test_last_category_accuracy_is_the_share_of_category_stays(tiny_shop):
    test = tiny_shop.test
    category = tiny_shop.catalog.item_category[test.items]
    targets = test.target_positions()
    stays = float(np.mean(category[targets] == category[targets - 1]))
    model = make_baseline("last_category").fit(tiny_shop.train, tiny_shop.catalog)
    assert evaluate(model, test, tiny_shop.catalog).metrics["cat_acc@1"] == pytest.approx(stays)
    assert 0.7 < stays < 0.9  # tiny_shop stays in its category with probability 0.8
