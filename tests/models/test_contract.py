"""The contract every registered model meets, parametrised over the registry and HierSRec's category feeds.

A model joins the suite by being registered in `hiersrec.models.MODELS`. Each variant is fitted or trained on
the synthetic shop through the one run function into a run directory, then checked: score shape and padding,
determinism, a session alone = in a batch, save -> load scores identically, `Recommender` top-k = top-k of
``model.score``, the 100% candidate budget = full ranking where candidates are supported, and the HTTP answer =
the evaluated ranking.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hiersrec.artifact import load_artifact
from hiersrec.config import DataConfig, FittedModelConfig, FusionConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.errors import ConfigError, NotFittedError
from hiersrec.models import MODELS, is_neural, make_model
from hiersrec.models.base import candidate_support
from hiersrec.models.category_feed import CATEGORY_FEEDS
from hiersrec.recommend import DEFAULT_MAX_LEN, Recommender
from hiersrec.retrieval.index import top_k
from hiersrec.train.run import TrainingData, fit_run

K = 10
MAX_LEN = 7
NEURAL = [name for name in MODELS if is_neural(name) and name != "hiersrec"]
# A fused variant "neural+partner": the neural model with a fitted partner at a fixed rule and weight.
FUSED = {"hiersrec+vstan": ("probability", 0.3), "hiersrec+sr": ("logit", 2.0), "hiersrec+textknn": ("logit", 4.0)}
VARIANTS = (
    [name for name in MODELS if not is_neural(name)]
    + NEURAL
    + [f"hiersrec:{feed}" for feed in CATEGORY_FEEDS]
    + list(FUSED)
)
TINY = {"d_model": 16, "n_heads": 2, "d_ff": 24, "max_len": MAX_LEN, "d_category": 6, "d_feed": 5}
ITEM_VARIANTS = [v for v in VARIANTS if v != "last_category"]  # last_category predicts categories only


def _model_name(variant: str) -> str:
    return variant.partition(":")[0].partition("+")[0]


def _config(variant: str) -> RunConfig:
    name, _, feed = variant.partition(":")
    name, _, partner = name.partition("+")
    if not is_neural(name):
        return RunConfig(model=FittedModelConfig(name=name))
    config_class = MODELS[name].config_class
    sizes = {key: value for key, value in TINY.items() if key in {f.name for f in dataclasses.fields(config_class)}}
    model = config_class(**sizes, **({"category_feed": feed} if feed else {}))
    train = TrainConfig(epochs=2, batch_targets=256, warmup_steps=2, show_progress=False, device="cpu", seed=3)
    fusion = FusionConfig()
    if partner:  # one (rule, weight) pair: the "search" keeps it, so the partner really takes part
        rule, weight = FUSED[variant]
        fusion = FusionConfig(partner=partner, rules=(rule,), **{f"{rule}_weights": (weight,)})
    return RunConfig(data=DataConfig(), model=model, train=train, fusion=fusion)


@pytest.fixture(scope="module")
def runs(tiny_shop, tmp_path_factory):
    """variant -> (run directory, the in-memory model fit_run returned); fitted lazily, once per module."""
    cache: dict[str, tuple] = {}

    def get(variant: str):
        if variant not in cache:
            directory = tmp_path_factory.mktemp(variant.replace(":", "-"))
            artifact, _ = fit_run(_config(variant), TrainingData.from_prepared(tiny_shop), directory)
            cache[variant] = (directory, artifact.model)
        return cache[variant]

    return get


def _sessions(tiny_shop, n: int = 12) -> list[np.ndarray]:
    test = tiny_shop.test
    return [test.items[test.offsets[i] : test.offsets[i + 1]][:-1] for i in range(n) if test.lengths[i] > 1]


def _batch(tiny_shop, sessions):
    # As long as any model reads (HierSRec keeps its last MAX_LEN clicks itself; kNN models read it all).
    items, lengths = left_pad(sessions, DEFAULT_MAX_LEN)
    return make_batch(items, lengths, tiny_shop.catalog)


@pytest.mark.parametrize("variant", ITEM_VARIANTS)
def test_score_shape_padding_and_determinism(tiny_shop, runs, variant):
    _, model = runs(variant)
    batch = _batch(tiny_shop, _sessions(tiny_shop))
    scores = model.score(batch)
    assert scores.shape == (len(batch), tiny_shop.catalog.n_items + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all() and not torch.isnan(scores).any()
    assert torch.equal(model.score(batch), scores)


@pytest.mark.parametrize("variant", ITEM_VARIANTS)
def test_a_session_scores_the_same_alone_and_in_a_batch(tiny_shop, runs, variant):
    _, model = runs(variant)
    sessions = _sessions(tiny_shop)
    together = model.score(_batch(tiny_shop, sessions))
    for row, session in enumerate(sessions):
        alone = model.score(_batch(tiny_shop, [session]))[0]
        torch.testing.assert_close(alone, together[row], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_then_load_scores_identically(tiny_shop, runs, variant):
    directory, model = runs(variant)
    loaded = load_artifact(directory)
    assert loaded.config.model_name == _model_name(variant)
    assert loaded.model.describe() == model.describe()
    batch = _batch(tiny_shop, _sessions(tiny_shop))
    method = "score" if hasattr(model, "score") else "score_categories"
    assert torch.equal(getattr(loaded.model, method)(batch), getattr(model, method)(batch))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not is_neural(_model_name(v))])
def test_fitted_models_refuse_to_score_before_fit_and_fit_deterministically(tiny_shop, runs, variant):
    _, model = runs(variant)
    fresh = make_model(variant)
    batch = _batch(tiny_shop, _sessions(tiny_shop))
    method = "score" if hasattr(fresh, "score") else "score_categories"
    with pytest.raises(NotFittedError):
        getattr(fresh, method)(batch)
    with pytest.raises(NotFittedError):
        fresh.save(".")
    refit = make_model(variant).fit(tiny_shop.train, tiny_shop.catalog)
    assert torch.equal(getattr(refit, method)(batch), getattr(model, method)(batch))


def _raw(tiny_shop, sessions) -> list[list[str]]:
    return [list(tiny_shop.vocab.decode_items(session.tolist())) for session in sessions]


@pytest.mark.parametrize("variant", ITEM_VARIANTS)
def test_recommender_top_k_is_the_top_k_of_model_score(tiny_shop, runs, variant):
    directory, model = runs(variant)
    sessions = _sessions(tiny_shop)
    expected_ids, expected_scores = top_k(model.score(_batch(tiny_shop, sessions)), K)
    recommender = Recommender.from_artifact(directory)
    for row, rec in enumerate(recommender.recommend_batch(_raw(tiny_shop, sessions), K)):
        real = expected_scores[row] > float("-inf")
        assert rec.item_ids == tuple(tiny_shop.vocab.decode_items(expected_ids[row][real].tolist()))
        np.testing.assert_allclose(rec.scores, expected_scores[row][real].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ITEM_VARIANTS)
def test_the_full_candidate_budget_is_full_ranking_where_supported(tiny_shop, runs, variant):
    directory, model = runs(variant)
    recommender = Recommender.from_artifact(directory)
    raw = _raw(tiny_shop, _sessions(tiny_shop))
    if candidate_support(model) is not None:
        assert not recommender.supports_candidates
        with pytest.raises(NotImplementedError):
            recommender.recommend(raw[0], K, candidate_budget="100%")
        return
    assert variant.startswith("hiersrec")  # every HierSRec feed supports candidates, fused or not
    full = recommender.recommend_batch(raw, K)
    everything = recommender.recommend_batch(raw, K, candidate_budget="100%")
    for exact, candidates in zip(full, everything, strict=True):
        assert candidates.item_ids == exact.item_ids
        np.testing.assert_allclose(candidates.scores, exact.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ITEM_VARIANTS)
def test_the_served_answer_is_the_evaluated_ranking(tiny_shop, runs, variant):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hiersrec.serve.app import create_app

    directory, model = runs(variant)
    sessions = _sessions(tiny_shop, n=6)
    expected_ids, _ = top_k(model.score(_batch(tiny_shop, sessions)), K)
    body = {"sessions": [{"items": items} for items in _raw(tiny_shop, sessions)], "k": K}
    with TestClient(create_app(directory)) as client:
        answer = client.post("/recommend", json=body)
        info = client.get("/model").json()
    assert answer.status_code == 200 and info["name"] == _model_name(variant)
    for row, result in enumerate(answer.json()["results"]):
        served = tuple(item["item_id"] for item in result["items"])
        assert served == tuple(tiny_shop.vocab.decode_items(expected_ids[row][: len(served)].tolist()))
        assert len(served) == min(K, tiny_shop.catalog.n_items)


def test_a_category_only_model_cannot_be_asked_for_items(tiny_shop, runs):
    directory, _ = runs("last_category")
    with pytest.raises(ConfigError, match="predicts categories only"):
        Recommender.from_artifact(directory)


@pytest.mark.parametrize("variant", [v for v in ITEM_VARIANTS if v.startswith("hiersrec")])
@pytest.mark.parametrize("budget", ["category:1", "category:1:categories-only", "10%"])
def test_a_candidate_budget_ranks_the_full_scores_of_its_candidates(tiny_shop, runs, variant, budget):
    # The candidates: the chosen categories' items, and by default the session's own items (issue 12: a repeat
    # is never lost to the budget); each ranked with its full-ranking score, for every category feed.
    from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, candidate_mask, select_categories

    directory, model = runs(variant)
    sessions = _sessions(tiny_shop)
    batch = _batch(tiny_shop, sessions)
    parsed = CandidateBudget.parse(budget)
    sizes = torch.from_numpy(CategoryLayout.from_catalog(tiny_shop.catalog).sizes)
    item_category = torch.from_numpy(tiny_shop.catalog.item_category)
    allowed = candidate_mask(select_categories(model.score_categories(batch), sizes, parsed), item_category)
    if parsed.session_items:
        allowed |= torch.zeros_like(allowed).scatter_(1, batch.items, True)
        allowed[:, 0] = False
    expected_ids, expected_scores = top_k(model.score(batch).masked_fill(~allowed, float("-inf")), K)
    recommender = Recommender.from_artifact(directory)
    for row, rec in enumerate(recommender.recommend_batch(_raw(tiny_shop, sessions), K, candidate_budget=budget)):
        real = expected_scores[row] > float("-inf")
        assert rec.item_ids == tuple(tiny_shop.vocab.decode_items(expected_ids[row][real].tolist()))
        np.testing.assert_allclose(rec.scores, expected_scores[row][real].numpy(), rtol=1e-5, atol=1e-5)
