import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiersrec.eval.metrics import category_hits_at, hit_rate_at, ndcg_at, reciprocal_rank_at, target_ranks

NEG_INF = float("-inf")

# 3 cases x 5 columns (column 0 = padding); hand-computed ranks below.
SCORES = torch.tensor(
    [
        [NEG_INF, 0.9, 0.1, 0.5, 0.3],  # target 3 (0.5): one higher (0.9) -> rank 2
        [NEG_INF, 0.2, 0.2, 0.2, 0.2],  # target 2, all tied -> pessimistic 4, optimistic 1, mean 2.5
        [NEG_INF, 0.1, 0.7, 0.7, 0.9],  # target 2 (0.7): 0.9 higher, 0.7 tied -> 3 / 2 / 2.5
    ]
)
TARGETS = torch.tensor([3, 2, 2])


@pytest.mark.parametrize(
    ("ties", "expected"),
    [("pessimistic", [2.0, 4.0, 3.0]), ("optimistic", [2.0, 1.0, 2.0]), ("mean", [2.0, 2.5, 2.5])],
)
def test_ranks_by_tie_policy(ties, expected):
    assert target_ranks(SCORES, TARGETS, ties).tolist() == expected


def test_constant_model_gets_the_worst_rank():
    scores = torch.zeros(2, 101)
    scores[:, 0] = NEG_INF
    assert target_ranks(scores, torch.tensor([1, 100])).tolist() == [100.0, 100.0]


def test_padding_column_never_competes_even_when_it_ties():
    scores = torch.tensor([[NEG_INF, NEG_INF, 1.0]])
    assert target_ranks(scores, torch.tensor([1])).tolist() == [2.0]


def test_hand_computed_metrics():
    ranks = target_ranks(SCORES, TARGETS)  # 2, 4, 3
    assert hit_rate_at(ranks, 3).mean().item() == pytest.approx(2 / 3)
    assert reciprocal_rank_at(ranks, 3).mean().item() == pytest.approx((1 / 2 + 0 + 1 / 3) / 3)
    expected_ndcg = (1 / math.log2(3) + 0 + 1 / math.log2(4)) / 3
    assert ndcg_at(ranks, 3).mean().item() == pytest.approx(expected_ndcg)
    assert hit_rate_at(ranks, 1).sum().item() == 0


def test_nan_target_score_is_an_error():
    scores = torch.tensor([[NEG_INF, float("nan"), 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(scores, torch.tensor([1]))


def test_unknown_tie_policy():
    with pytest.raises(ValueError, match="tie policy"):
        target_ranks(SCORES, TARGETS, "random")  # type: ignore[arg-type]


def test_category_accuracy():
    category_scores = torch.tensor([[NEG_INF, 0.1, 0.8, 0.3], [NEG_INF, 0.5, 0.5, 0.0]])
    targets = torch.tensor([2, 1])
    assert category_hits_at(category_scores, targets, 1).tolist() == [1.0, 0.0]  # the tie counts against
    assert category_hits_at(category_scores, targets, 2).tolist() == [1.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 12),
    st.integers(0, 10_000),
    st.sampled_from(["pessimistic", "optimistic", "mean"]),
)
def test_metric_properties(n_rows, n_items, seed, ties):
    generator = torch.Generator().manual_seed(seed)
    # Few distinct values, so ties are frequent.
    scores = torch.randint(0, 3, (n_rows, n_items + 1), generator=generator).float()
    scores[:, 0] = NEG_INF
    targets = torch.randint(1, n_items + 1, (n_rows,), generator=generator)
    ranks = target_ranks(scores, targets, ties)
    assert ((ranks >= 1) & (ranks <= n_items)).all()
    previous_hr = 0.0
    for k in range(1, n_items + 1):
        hr, mrr = hit_rate_at(ranks, k).mean().item(), reciprocal_rank_at(ranks, k).mean().item()
        assert 0.0 <= mrr <= hr + 1e-7 <= 1.0 + 1e-7
        assert hr >= previous_hr
        previous_hr = hr
    # Permuting item columns (and the targets with them) leaves ranks unchanged.
    permutation = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n_items, generator=generator)])
    inverse = torch.argsort(permutation)
    assert torch.equal(target_ranks(scores[:, permutation], inverse[targets], ties), ranks)
