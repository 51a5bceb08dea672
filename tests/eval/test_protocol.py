import numpy as np
import pytest
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.eval.protocol import evaluate, format_table

N_ITEMS = 6
CATALOG = ItemCatalog(item_category=np.array([0, 1, 1, 1, 2, 2, 2]), n_categories=2)
# Successor rule i -> i + 1 is right for 3 of the 5 prefixes below.
TEST = SessionData.from_lists([[1, 2, 3], [4, 5, 1], [2, 6]])


class SuccessorModel:
    """Scores the successor of the last click highest, then lower item indices."""

    def score(self, batch: SessionBatch) -> torch.Tensor:
        last = batch.items[:, -1]
        scores = -torch.arange(N_ITEMS + 1, dtype=torch.float32).repeat(len(batch), 1) / 100
        scores[torch.arange(len(batch)), (last % N_ITEMS) + 1] = 1.0
        scores[:, 0] = float("-inf")
        return scores


class ConstantModel:
    def score(self, batch: SessionBatch) -> torch.Tensor:
        scores = torch.zeros(len(batch), N_ITEMS + 1)
        scores[:, 0] = float("-inf")
        return scores


class LastCategoryOracle:
    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        scores = torch.full((len(batch), 3), float("-inf"))
        scores[:, 1:] = 0.0
        scores[torch.arange(len(batch)), batch.categories[:, -1]] = 1.0
        return scores


def test_hand_computed_report():
    report = evaluate(SuccessorModel(), TEST, CATALOG, ks=[1, 5])
    assert report.n_cases == 5 and report.n_sessions == 3 and report.n_items == N_ITEMS
    # Prefix -> target: [1]->2 hit, [1,2]->3 hit, [4]->5 hit, [4,5]->1: successor 6 first, then 1 -> rank 2;
    # [2]->6: successor 3 first, then 1, 2, 4, 5 by index -> rank 6.
    assert report.metrics["hr@1"] == pytest.approx(3 / 5)
    assert report.metrics["mrr@5"] == pytest.approx((1 + 1 + 1 + 1 / 2 + 0) / 5)
    assert report.metrics["hr@5"] == pytest.approx(4 / 5)
    assert "cat_acc@1" not in report.metrics


def test_last_item_protocol_counts_one_case_per_session():
    report = evaluate(SuccessorModel(), TEST, CATALOG, ks=[1], protocol="last_item")
    assert report.n_cases == 3
    # [1,2]->3 hit, [4,5]->1 miss, [2]->6 miss.
    assert report.metrics["hr@1"] == pytest.approx(1 / 3)


def test_constant_model_gets_no_hits_below_the_catalogue_size():
    report = evaluate(ConstantModel(), TEST, CATALOG, ks=[5, 6])
    assert report.metrics["hr@5"] == 0.0
    assert report.metrics["hr@6"] == 1.0
    assert report.metrics["mrr@6"] == pytest.approx(1 / 6)


def test_batching_does_not_change_metrics():
    small = evaluate(SuccessorModel(), TEST, CATALOG, ks=[2], batch_size=1).metrics
    large = evaluate(SuccessorModel(), TEST, CATALOG, ks=[2], batch_size=100).metrics
    assert small == large


def test_category_only_model_reports_category_accuracy():
    report = evaluate(LastCategoryOracle(), TEST, CATALOG)
    # Last category -> next category: 1->1, 1->1, 2->2, 2->1, 1->2.
    assert report.metrics == {"cat_acc@1": pytest.approx(3 / 5), "cat_acc@5": 1.0}


def test_report_table_and_json():
    report = evaluate(SuccessorModel(), TEST, CATALOG, ks=[1])
    table = format_table({"successor": report})
    assert "successor" in table and "60.00" in table and "all_prefixes" in table
    assert report.to_dict()["metrics"]["hr@1"] == pytest.approx(0.6)


def test_category_accuracy_is_left_out_where_it_means_nothing(tiny_shop):
    # issue 9: 100% with a single category, chance from a head no loss trained; both were reported as accuracy.
    import numpy as np

    from hiersrec.data.catalog import ItemCatalog
    from hiersrec.eval.protocol import evaluate
    from hiersrec.models import make_baseline
    from hiersrec_support import build_model

    one = ItemCatalog(item_category=np.minimum(tiny_shop.catalog.item_category, 1), n_categories=1)
    single = make_baseline("last_category").fit(tiny_shop.train, one)
    report = evaluate(single, tiny_shop.test, one, ks=[20])
    assert "cat_acc@1" not in report.metrics and "1 category" in report.extra["category_metrics_omitted"]
    untrained = build_model(tiny_shop.catalog, category_loss_weight=0.0, category_feed="none").eval()
    report = evaluate(untrained, tiny_shop.test, tiny_shop.catalog, ks=[20], max_len=7)
    assert "cat_acc@1" not in report.metrics and "hr@20" in report.metrics
    assert "not trained" in report.extra["category_metrics_omitted"]
    trained = build_model(tiny_shop.catalog).eval()
    assert "cat_acc@1" in evaluate(trained, tiny_shop.test, tiny_shop.catalog, ks=[20], max_len=7).metrics
