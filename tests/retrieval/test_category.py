import numpy as np
import pytest
import torch

from hiersrec.errors import ConfigError
from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, candidate_mask, select_categories

NEG = float("-inf")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4%", CandidateBudget(fraction=0.04)),
        ("4%:probability", CandidateBudget(fraction=0.04, order="probability")),
        ("0.04:density", CandidateBudget(fraction=0.04, order="density")),
        ("0.16", CandidateBudget(fraction=0.16)),
        (1.0, CandidateBudget(fraction=1.0)),
        ("100%", CandidateBudget(fraction=1.0)),
        ("category:5", CandidateBudget(n_categories=5)),
        ("categories=2", CandidateBudget(n_categories=2)),
    ],
)
def test_budget_parse(text, expected):
    assert CandidateBudget.parse(text) == expected


@pytest.mark.parametrize("text", ["", "four", "0%", "101%", "-0.1", "category:0", "cat:x", "4%:size", "4%:"])
def test_budget_parse_rejects_with_a_message(text):
    with pytest.raises(ConfigError, match="budget"):
        CandidateBudget.parse(text)


def test_budget_labels():
    assert CandidateBudget(fraction=0.04).label == "4%"
    assert CandidateBudget(fraction=0.04, order="probability").label == "4%:probability"
    assert CandidateBudget(fraction=1.0, order="probability").label == "100%"  # every category either way
    assert CandidateBudget(n_categories=3).label == "3 categories"
    assert CandidateBudget(fraction=1.0).is_exhaustive and not CandidateBudget(fraction=0.5).is_exhaustive


def test_layout_groups_each_category_contiguously_in_index_order():
    # items 1..6 with categories 3, 1, 3, 1, 2, 3; category 4 is empty
    layout = CategoryLayout.from_item_category(np.array([0, 3, 1, 3, 1, 2, 3]), n_categories=4)
    assert layout.order.tolist() == [2, 4, 5, 1, 3, 6]
    assert layout.sizes.tolist() == [0, 2, 1, 3, 0]
    assert layout.starts.tolist() == [0, 0, 2, 3, 6]
    assert layout.order[layout.category_slice(3)].tolist() == [1, 3, 6]
    assert layout.n_items == 6 and layout.n_categories == 4


SIZES = torch.tensor([0, 5, 2, 3, 0, 10])  # 20 items; category 4 is empty


def _chosen(scores, budget, allowed=None):
    selected = select_categories(torch.tensor([scores]), SIZES, budget, allowed)
    return selected[0].nonzero().squeeze(1).tolist()


def _by_probability(fraction):
    return CandidateBudget(fraction=fraction, order="probability")


def test_fraction_budget_takes_the_most_probable_categories_until_reached():
    scores = [NEG, 0.1, 0.9, 0.5, 0.95, 0.2]  # order: 4 (empty, skipped), 2, 3, 5, 1
    assert _chosen(scores, _by_probability(0.05)) == [2]  # 1 item needed: category 2 gives 2
    assert _chosen(scores, _by_probability(0.10)) == [2]  # 2 needed, 2 given
    assert _chosen(scores, _by_probability(0.15)) == [2, 3]  # 3 needed: 2 + 3
    assert _chosen(scores, _by_probability(0.30)) == [2, 3, 5]  # 6 needed: overshoot to 15
    assert _chosen(scores, _by_probability(1.0)) == [1, 2, 3, 5]  # every non-empty category


def test_density_order_takes_the_most_probable_per_item_first():
    # P = 0.30, 0.10, 0.15, -, 0.45 for sizes 5, 2, 3, 0, 10: per item 0.06, 0.05, 0.05, -, 0.045.
    log_p = torch.tensor([NEG, 0.30, 0.10, 0.15, 0.4, 0.45]).log().tolist()
    assert _chosen(log_p, CandidateBudget(fraction=0.25)) == [1]  # 5 items, against category 5's 10
    assert _chosen(log_p, _by_probability(0.25)) == [5]  # 10 items for P 0.45
    assert _chosen(log_p, CandidateBudget(fraction=0.30)) == [1, 2]  # ties (0.05) by category index
    assert _chosen(log_p, CandidateBudget(fraction=0.45)) == [1, 2, 3]  # 10 items for P 0.55 ...
    assert _chosen(log_p, _by_probability(0.45)) == [5]  # ... where the paper's order ranks 10 for P 0.45


def test_density_order_depends_on_log_probabilities_only_up_to_a_row_constant():
    logits = torch.randn(7, 6)
    budget = CandidateBudget(fraction=0.3)
    shifted = select_categories(logits + torch.arange(7.0)[:, None], SIZES, budget)
    assert torch.equal(select_categories(logits, SIZES, budget), shifted)
    assert torch.equal(select_categories(logits.log_softmax(1), SIZES, budget), shifted)


def test_count_budget_ties_padding_and_allowed():
    scores = [5.0, 0.3, 0.3, 0.3, 0.9, 0.3]  # padding's high score is ignored; ties by category index
    assert _chosen(scores, CandidateBudget(n_categories=2)) == [1, 2]
    assert _chosen(scores, CandidateBudget(n_categories=10)) == [1, 2, 3, 5]
    allowed = torch.tensor([False, False, True, False, True, True])
    assert _chosen(scores, CandidateBudget(n_categories=2), allowed) == [2, 5]
    assert _chosen(scores, CandidateBudget(fraction=1.0), allowed) == [2, 5]


def test_non_finite_category_scores_are_never_taken():
    assert _chosen([NEG, NEG, 0.1, NEG, 0.0, NEG], CandidateBudget(fraction=1.0)) == [2]


def test_select_is_row_independent():
    scores = torch.randn(9, 6)
    batch = select_categories(scores, SIZES, CandidateBudget(fraction=0.3))
    alone = torch.cat([select_categories(scores[i : i + 1], SIZES, CandidateBudget(fraction=0.3)) for i in range(9)])
    assert torch.equal(batch, alone)


def test_candidate_mask_marks_the_items_of_chosen_categories():
    item_category = torch.tensor([0, 3, 1, 3, 1, 2, 3])
    selected = torch.tensor([[False, True, False, False], [False, False, True, True]])
    mask = candidate_mask(selected, item_category)
    assert mask.tolist() == [
        [False, False, True, False, True, False, False],
        [False, True, False, True, False, True, True],
    ]
