import numpy as np
import pytest
import torch

from hiersrec.artifact import FORMAT_VERSION
from hiersrec.data.batching import make_batch, prefix_batch
from hiersrec.errors import DataError
from hiersrec.recommend import Recommender
from inference_support import RUN_MAX_LEN as MAX_LEN
from inference_support import trained_recommender, trained_run


class ConstantModel:
    """A plain SessionRecommender (score only) that ties every item."""

    def score(self, batch):
        scores = torch.zeros(len(batch), 38)
        scores[:, 0] = float("-inf")
        return scores


@pytest.fixture(scope="module")
def shop(tiny_shop):
    return tiny_shop


@pytest.fixture(scope="module")
def recommender(shop):
    return trained_recommender(shop)


@pytest.fixture(scope="module")
def model(recommender):
    return recommender.model


def _raw(shop, idx):
    return shop.vocab.decode_items(idx)


def _expected(model, shop, session_idx, k):
    # Reference ranking: the model's scores sorted by (score desc, item index asc).
    items = torch.tensor([session_idx[-MAX_LEN:]])

    batch = make_batch(items.numpy(), np.array([items.shape[1]]), shop.catalog)
    scores = model.score(batch)[0]
    order = sorted(range(1, scores.numel()), key=lambda i: (-scores[i].item(), i))[:k]
    return _raw(shop, order), [scores[i].item() for i in order]


def test_recommend_returns_the_models_top_items_as_raw_ids(shop, model, recommender):
    session = [3, 4, 5]
    rec = recommender.recommend(_raw(shop, session), k=5)
    ids, scores = _expected(model, shop, session, 5)
    assert list(rec.item_ids) == ids and rec.scores == pytest.approx(scores)
    cats = shop.vocab.decode_categories(shop.catalog.item_category[shop.vocab.encode_items(ids)])
    assert list(rec.category_ids) == cats
    assert rec.fallback is None and rec.unknown_items == ()


def test_unknown_items_are_dropped_and_reported(shop, recommender):
    clean = recommender.recommend(_raw(shop, [3, 4]), k=5)
    noisy = recommender.recommend(["nope", *_raw(shop, [3]), "nope", 42, *_raw(shop, [4])], k=5)
    assert noisy.item_ids == clean.item_ids and noisy.scores == pytest.approx(clean.scores)
    assert noisy.unknown_items == ("nope", "42") and noisy.fallback is None


@pytest.mark.parametrize("session", [[], ["x", "y"]])
def test_empty_or_all_unknown_sessions_get_the_labelled_popularity_fallback(shop, recommender, session):
    rec = recommender.recommend(session, k=4)
    counts = shop.train.item_counts(shop.catalog.n_items)
    expected = sorted(range(1, counts.size), key=lambda i: (-counts[i], i))[:4]
    assert rec.fallback == "popularity"
    assert list(rec.item_ids) == _raw(shop, expected)
    assert rec.scores == pytest.approx([float(counts[i]) for i in expected])
    assert rec.unknown_items == tuple(session)


def test_fallback_without_popularity_is_empty_and_labelled(shop, model):
    rec = Recommender(model, shop.vocab, shop.catalog).recommend([], k=3)
    assert rec.fallback == "empty" and rec.item_ids == ()


def test_from_artifact_loads_the_run(shop, model):
    recommender = Recommender.from_artifact(trained_run(shop))
    assert recommender.max_len == MAX_LEN and recommender.supports_candidates
    info = recommender.describe()
    assert info["model"]["name"] == "hiersrec" and info["config"]["model"]["d_model"] == 16
    assert "valid" in info["metrics"] and info["meta"]["format_version"] == FORMAT_VERSION
    session = _raw(shop, [4, 5, 6])
    direct = Recommender(model, shop.vocab, shop.catalog).recommend(session, k=5)
    assert recommender.recommend(session, k=5) == direct


def test_long_sessions_keep_their_most_recent_clicks(shop, recommender):
    long_session = list(range(1, 21))
    full = recommender.recommend(_raw(shop, long_session), k=6)
    recent = recommender.recommend(_raw(shop, long_session[-MAX_LEN:]), k=6)
    assert full.item_ids == recent.item_ids and full.scores == pytest.approx(recent.scores)


def test_a_session_scores_the_same_alone_or_in_a_batch(shop, recommender):
    sessions = [_raw(shop, s) for s in ([1], [2, 9, 30], list(range(5, 18)), [])] + [["zz", *_raw(shop, [7])]]
    together = recommender.recommend_batch(sessions, k=8)
    small_batches = Recommender(recommender.model, shop.vocab, shop.catalog, shop.train.item_counts(37), batch_size=2)
    for session, batch_rec, chunked in zip(
        sessions, together, small_batches.recommend_batch(sessions, k=8), strict=True
    ):
        alone = recommender.recommend(session, k=8)
        for other in (batch_rec, chunked):
            assert other.item_ids == alone.item_ids and other.fallback == alone.fallback
            np.testing.assert_allclose(other.scores, alone.scores, rtol=1e-5)


def test_k_beyond_the_catalogue_returns_what_exists(shop, recommender):
    rec = recommender.recommend(_raw(shop, [1, 2]), k=1000)
    assert len(rec.item_ids) == 37 and len(set(rec.item_ids)) == 37
    seen = recommender.recommend(_raw(shop, [1, 2]), k=1000, exclude_seen=True, exclude=_raw(shop, [3]))
    assert len(seen.item_ids) == 34 and not {*_raw(shop, [1, 2, 3])} & set(seen.item_ids)
    assert [i for i in rec.item_ids if i not in _raw(shop, [1, 2, 3])] == list(seen.item_ids)


def test_k_below_one_is_an_error(recommender):
    with pytest.raises(DataError, match="k must be"):
        recommender.recommend(["i1"], k=0)


def test_categories_restrict_the_recommendations(shop, recommender):
    rec = recommender.recommend(_raw(shop, [1, 2]), k=1000, categories=["c2", "c4"])
    sizes = shop.catalog.category_sizes()
    assert set(rec.category_ids) == {"c2", "c4"} and len(rec.item_ids) == sizes[2] + sizes[4]
    budgeted = recommender.recommend(_raw(shop, [1, 2]), k=1000, categories=["c2", "c4"], candidate_budget="100%")
    assert budgeted.item_ids == rec.item_ids
    with pytest.raises(DataError, match="unknown category ids"):
        recommender.recommend(["i1"], categories=["c2", "nope"])


def test_full_candidate_budget_equals_exact_ranking(shop, recommender):
    for session in ([1, 2], [30], list(range(10, 30))):
        exact = recommender.recommend(_raw(shop, session), k=10, exclude_seen=True)
        candidates = recommender.recommend(_raw(shop, session), k=10, exclude_seen=True, candidate_budget=1.0)
        assert candidates.item_ids == exact.item_ids
        np.testing.assert_allclose(candidates.scores, exact.scores, rtol=1e-5)


def test_one_category_budget_ranks_the_predicted_category_only(shop, model, recommender):
    session = _raw(shop, [12, 13])
    rec = recommender.recommend(session, k=1000, candidate_budget="category:1")

    batch = make_batch(np.array([[12, 13]]), np.array([2]), shop.catalog)
    top_category = int(model.score_categories(batch)[0].argmax())
    assert set(rec.category_ids) == {shop.vocab.category_ids[top_category]}
    assert len(rec.item_ids) == shop.catalog.category_sizes()[top_category]


def test_plain_models_work_but_refuse_candidate_budgets(shop):
    recommender = Recommender(ConstantModel(), shop.vocab, shop.catalog)
    assert recommender.max_len == 50 and not recommender.supports_candidates
    rec = recommender.recommend(_raw(shop, [5]), k=3)
    assert list(rec.item_ids) == _raw(shop, [1, 2, 3])  # all tied: ascending item index
    with pytest.raises(NotImplementedError, match="can only rank every item"):
        recommender.recommend(_raw(shop, [5]), k=3, candidate_budget="4%")


def test_recommended_scores_equal_the_evaluated_scores(shop, model, recommender):
    # The evaluator scores prefix p of a test session with model.score on its prefix batch.
    targets = shop.test.target_positions()[:40]
    batch = prefix_batch(shop.test, shop.catalog, targets, MAX_LEN)
    evaluated = model.score(batch)
    starts = shop.test.session_starts()[targets]
    for row, (start, target) in enumerate(zip(starts, targets, strict=True)):
        prefix = shop.test.items[start:target].tolist()
        rec = recommender.recommend(_raw(shop, prefix), k=1000)
        served = dict(zip(rec.item_ids, rec.scores, strict=True))
        target_item = int(shop.test.items[target])
        assert served[_raw(shop, [target_item])[0]] == pytest.approx(evaluated[row, target_item].item(), rel=1e-5)


def test_a_loaded_run_falls_back_to_its_training_popularity(shop):
    recommender = Recommender.from_artifact(trained_run(shop))
    rec = recommender.recommend([], k=3)
    fit_sessions, _ = shop.validation_split()  # the run saved the click counts of what it was fitted on
    counts = fit_sessions.item_counts(shop.catalog.n_items)
    returned = counts[shop.vocab.encode_items(list(rec.item_ids))]
    assert rec.fallback == "popularity" and returned.tolist() == sorted(counts[1:], reverse=True)[:3]
