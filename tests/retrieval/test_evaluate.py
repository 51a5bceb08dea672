import math

import numpy as np
import pytest
import torch

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.protocol import evaluate
from hiersrec.retrieval.evaluate import evaluate_candidates, format_candidate_table
from inference_support import QueryModel

NEG = float("-inf")


class LastItemModel:
    """Scores looked up by the last click: a hand-checkable model."""

    def __init__(self, item_table, category_table):
        self.item_table, self.category_table = item_table, category_table

    def score(self, batch):
        scores = self.item_table[batch.items[:, -1]].clone()
        scores[:, 0] = NEG
        return scores

    def score_categories(self, batch):
        return self.category_table[batch.items[:, -1]]


def _hand_case():
    catalog = ItemCatalog(item_category=np.array([0, 1, 1, 2, 2, 3, 3]), n_categories=3)
    item_table = torch.zeros(7, 7)
    item_table[1] = torch.tensor([0, 5, 4, 3, 2, 1, 0.0])  # target 3: full rank 3
    item_table[5] = torch.tensor([0, 9, 8, 7, 6, 1, 2.0])  # target 6: full rank 5, first within category 3
    item_table[2] = torch.tensor([0, 3, 3, 0, 0, 0, 0.0])  # target 1 ties with item 2: pessimistic rank 2
    category_table = torch.zeros(7, 4)
    category_table[1] = torch.tensor([NEG, 1, 0, 0])  # picks category 1: target 3 (category 2) is missed
    category_table[5] = torch.tensor([NEG, 0, 0, 1])
    category_table[2] = torch.tensor([NEG, 1, 0, 0])
    sessions = SessionData.from_lists([[1, 3], [5, 6], [2, 1]])
    return LastItemModel(item_table, category_table), sessions, catalog


def test_hand_computed_budgets():
    model, sessions, catalog = _hand_case()
    report = evaluate_candidates(model, sessions, catalog, budgets=["category:1", "100%"], k=20)
    full, one, everything = report.full, *report.budgets
    assert report.n_cases == 3
    assert full.metrics["hr@20"] == pytest.approx(1.0)
    assert full.metrics["mrr@20"] == pytest.approx((1 / 3 + 1 / 5 + 1 / 2) / 3)
    # A target outside the candidates is a miss even though k exceeds the catalogue (6 items).
    assert one.candidate_recall == pytest.approx(2 / 3)
    assert one.top_overlap == pytest.approx(2 / 6)  # the full top 20 is all 6 items; 2 of them are candidates
    assert one.metrics["hr@20"] == pytest.approx(2 / 3)
    assert one.metrics["mrr@20"] == pytest.approx((0 + 1 + 1 / 2) / 3)
    assert one.relative["mrr@20"] == pytest.approx(0.5 / full.metrics["mrr@20"])
    assert one.mean_candidate_fraction == pytest.approx(1 / 3) and one.mean_categories == pytest.approx(1.0)
    assert everything.metrics == pytest.approx(full.metrics) and everything.candidate_recall == 1.0
    assert everything.top_overlap == pytest.approx(1.0)
    assert one.batch_ms_per_case is None and one.single_ms_p50 is None  # no query model: nothing timed


@pytest.fixture(scope="module")
def query_model(tiny_shop):
    return QueryModel(tiny_shop.catalog.item_category, tiny_shop.catalog.n_categories, seed=3)


def test_full_budget_reproduces_the_evaluator(tiny_shop, query_model):
    report = evaluate_candidates(query_model, tiny_shop.test, tiny_shop.catalog, max_len=7, batch_size=64)
    reference = evaluate(query_model, tiny_shop.test, tiny_shop.catalog, ks=[20], max_len=7, batch_size=64)
    for key in ("hr@20", "mrr@20", "ndcg@20"):
        assert report.full.metrics[key] == pytest.approx(reference.metrics[key])
    last = report.budgets[-1]
    assert last.budget == "100%" and last.metrics == pytest.approx(report.full.metrics)
    assert last.candidate_recall == 1.0 and last.mean_candidate_fraction == pytest.approx(1.0)
    assert last.top_overlap == pytest.approx(1.0) and 0.0 < report.budgets[0].top_overlap < 1.0
    recalls = [row.candidate_recall for row in report.budgets]
    fractions = [row.mean_candidate_fraction for row in report.budgets]
    assert recalls == sorted(recalls) and fractions == sorted(fractions)
    # The stand-in's category head follows the last click's category, and sessions mostly stay in it.
    assert report.budgets[0].candidate_recall > 0.6
    for row in [report.full, *report.budgets]:
        assert row.batch_ms_per_case > 0 and row.single_ms_p50 > 0 and row.single_ms_p99 >= row.single_ms_p50
    table = format_candidate_table(report)
    assert "100%" in table and "full" in table and str(report.n_cases) in table
    assert not math.isnan(report.to_dict()["budgets"][0]["candidate_recall"])


def test_a_trained_hiersrec_run_full_budget_equals_its_evaluation(tiny_shop):
    from hiersrec.artifact import load_artifact
    from inference_support import RUN_MAX_LEN, trained_run

    model = load_artifact(trained_run(tiny_shop)).model
    options = {"max_len": RUN_MAX_LEN, "batch_size": 100}
    budgets = ["category:1:categories-only", "100%", "category:1"]
    report = evaluate_candidates(model, tiny_shop.test, tiny_shop.catalog, budgets=budgets, **options)
    reference = evaluate(model, tiny_shop.test, tiny_shop.catalog, ks=[20], **options)
    assert report.budgets[1].metrics == pytest.approx({k: reference.metrics[k] for k in report.full.metrics})
    assert report.full.metrics["mrr@20"] == pytest.approx(reference.metrics["mrr@20"])
    # One category of five: the next click's category is the predicted one in about cat_acc@1 of the cases.
    categories_only, with_session = report.budgets[0], report.budgets[2]
    assert categories_only.candidate_recall == pytest.approx(reference.metrics["cat_acc@1"], abs=1e-6)
    assert categories_only.single_ms_p50 is not None  # HierSRec's own search is timed
    # The session's own items join by default: never fewer targets kept, and every repeat of a click is kept.
    assert with_session.candidate_recall >= categories_only.candidate_recall
    assert with_session.mean_candidate_fraction > categories_only.mean_candidate_fraction


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "mean"])
def test_ranks_from_category_counts_equal_ranks_of_masked_scores(ties):
    from hiersrec.eval.metrics import target_ranks
    from hiersrec.retrieval.category import candidate_mask
    from hiersrec.retrieval.evaluate import _counts_by_category, _ranks

    generator = torch.Generator().manual_seed(0)
    item_category = torch.tensor([0] + [1 + i % 4 for i in range(30)])
    scores = torch.randint(0, 5, (40, 31), generator=generator).float()  # many ties
    scores[:, 0] = NEG
    targets = torch.randint(1, 31, (40,), generator=generator)
    selected = torch.rand(40, 5, generator=generator) < 0.5
    selected[:, 0] = False
    selected[torch.arange(40), item_category[targets]] = True  # targets inside: outside is a miss anyway
    masked = scores.masked_fill(~candidate_mask(selected, item_category), NEG)
    counts = _counts_by_category(scores, targets, item_category, 5)
    inside = torch.ones(40, dtype=torch.bool)
    assert torch.equal(_ranks(counts, selected, ties, inside), target_ranks(masked, targets, ties))


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "mean"])
def test_ranks_with_session_items_equal_ranks_of_masked_scores(ties):
    # Candidates = the chosen categories' items plus the session's items outside them; the target may be one
    # of those session items only.
    from types import SimpleNamespace

    from hiersrec.eval.metrics import target_ranks
    from hiersrec.retrieval.category import candidate_mask
    from hiersrec.retrieval.evaluate import _counts_by_category, _ranks, _SessionItems

    generator = torch.Generator().manual_seed(1)
    item_category = torch.tensor([0] + [1 + i % 4 for i in range(30)])
    scores = torch.randint(0, 5, (40, 31), generator=generator).float()
    scores[:, 0] = NEG
    items = torch.randint(0, 31, (40, 6), generator=generator)
    targets = items[:, 2].clamp(min=1)
    items[:, 2] = targets  # every target is a session item, often outside the chosen categories
    selected = torch.rand(40, 5, generator=generator) < 0.4
    selected[:, 0] = False
    session = _SessionItems.of(SimpleNamespace(items=items, target_items=targets), scores)
    extra = session.outside(selected, item_category)
    allowed = candidate_mask(selected, item_category) | torch.zeros(40, 31, dtype=torch.bool).scatter_(1, items, True)
    allowed[:, 0] = False
    masked = scores.masked_fill(~allowed, NEG)
    in_selected = selected.gather(1, item_category[targets].unsqueeze(1)).squeeze(1)
    assert (~in_selected).any() and (session.holds_target(extra) | in_selected).all()
    ranks = _ranks(
        _counts_by_category(scores, targets, item_category, 5), selected, ties, in_selected, session.counts(extra)
    )
    assert torch.equal(ranks, target_ranks(masked, targets, ties))
