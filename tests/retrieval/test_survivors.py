import numpy as np
import pytest
import torch

from hiersrec.errors import ConfigError
from hiersrec.models.base import ItemQuery, item_query_scores
from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, candidate_mask, select_categories
from hiersrec.retrieval.index import CategoryIndex, ExactIndex, top_k
from hiersrec.retrieval.survivors import GROUP, bf16_error_bound, group_maxima, kth_largest

NEG = float("-inf")
N_ITEMS, N_CATEGORIES, DIM = 3_000, 12, 32


@pytest.fixture(scope="module")
def shop():
    # Categories of a few hundred items each (several groups of GROUP columns per block), random embeddings.
    rng = np.random.default_rng(3)
    item_category = np.concatenate([[0], rng.integers(1, N_CATEGORIES + 1, N_ITEMS)])
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(N_ITEMS + 1, DIM, generator=generator)
    queries = torch.randn(40, DIM, generator=generator)
    category_scores = torch.randn(40, N_CATEGORIES + 1, generator=generator)
    return item_category, embeddings, queries, category_scores


def test_group_maxima_and_kth_largest_known_answers():
    block = torch.arange(2 * (GROUP + 3), dtype=torch.float32).reshape(2, GROUP + 3)
    assert group_maxima(block).tolist() == [[GROUP - 1, GROUP + 2], [2 * GROUP + 2, 2 * GROUP + 5]]
    rows, values = torch.tensor([1, 0, 1, 1, 0]), torch.tensor([4.0, 9.0, 6.0, 5.0, 7.0])
    assert kth_largest(rows, values, 3, 2).tolist() == [7.0, 5.0, NEG]  # row 2 has no value at all
    assert kth_largest(rows, values, 2, 3).tolist() == [NEG, 4.0]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_bf16_scores_stay_within_the_bound(scale):
    generator = torch.Generator().manual_seed(7)
    items = scale * torch.randn(5_000, 64, generator=generator)
    queries = torch.randn(16, 64, generator=generator) / scale
    queries[0] *= 1e4  # one query far larger than the others: the bound follows each row's norm
    exact = queries @ items.T
    approximate = (queries.bfloat16() @ items.bfloat16().T).float()
    bound = bf16_error_bound(queries, float(items.norm(dim=1).max()))
    error = (approximate - exact).abs().amax(dim=1)
    assert (error <= bound).all()
    assert (error > 0).any()  # bf16 really is approximate here: the check is not vacuous


@pytest.mark.parametrize("with_exclusions", [False, True])
def test_bf16_exact_index_returns_the_fp32_answer(shop, with_exclusions):
    _, embeddings, queries, _ = shop
    exclude = torch.randint(0, N_ITEMS + 1, (queries.shape[0], 30), generator=torch.Generator().manual_seed(1))
    exclude = exclude if with_exclusions else None
    ref_ids, ref_scores = ExactIndex(embeddings).search(queries, 20, exclude=exclude)
    ids, scores = ExactIndex(embeddings, precision="bf16").search(queries, 20, exclude=exclude)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_bf16_exact_index_breaks_ties_by_item_like_fp32():
    # Integer embeddings and queries: bf16 represents them exactly, and many items tie at the cut.
    generator = torch.Generator().manual_seed(2)
    embeddings = torch.randint(-2, 3, (2_000, 8), generator=generator).float()
    queries = torch.randint(-2, 3, (10, 8), generator=generator).float()
    assert torch.equal(
        ExactIndex(embeddings, "bf16").search(queries, 25)[0], ExactIndex(embeddings).search(queries, 25)[0]
    )


def test_fewer_items_than_k_returns_each_item_once(shop):
    _, embeddings, queries, _ = shop
    ids, scores = ExactIndex(embeddings[:30], "bf16").search(queries[:3], 100)
    assert ids.shape == (3, 29) and torch.isfinite(scores).all()
    assert sorted(ids[0].tolist()) == list(range(1, 30))


def _masked_reference(query, embeddings, item_category, selected, k, exclude=None):
    # Full-ranking scores of the query model, masked to the chosen categories' items (and exclusions).
    full = item_query_scores(query, embeddings.T, torch.from_numpy(item_category))
    full = full.masked_fill(~candidate_mask(selected, torch.from_numpy(item_category)), NEG)
    full[:, 0] = NEG
    if exclude is not None:
        full = full.scatter(1, exclude, NEG)
    ids, scores = top_k(full, k)
    return ids.masked_fill(scores == NEG, 0), scores


@pytest.mark.parametrize("offsets", [False, True])
@pytest.mark.parametrize("budget", ["10%", "40%", "category:1"])
def test_batched_candidates_equal_the_masked_full_ranking(shop, offsets, budget):
    item_category, embeddings, queries, category_scores = shop
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget.parse(budget))
    generator = torch.Generator().manual_seed(4)
    terms = torch.randn(queries.shape[0], N_CATEGORIES + 1, generator=generator) if offsets else None
    query = ItemQuery(queries, category_scores, terms)
    exclude = torch.randint(0, N_ITEMS + 1, (queries.shape[0], 25), generator=generator)
    ref_ids, ref_scores = _masked_reference(query, embeddings, item_category, selected, 20, exclude)
    ids, scores = index.search(query, 20, selected=selected, exclude=exclude, strategy="blocks")
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_within_category_normaliser_candidates_equal_the_masked_full_ranking(shop):
    item_category, embeddings, queries, category_scores = shop
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget(fraction=0.2))
    query = ItemQuery(queries, category_scores, torch.log_softmax(category_scores, dim=1), True)
    ref_ids, ref_scores = _masked_reference(query, embeddings, item_category, selected, 10)
    ids, scores = index.search(query, 10, selected=selected, strategy="blocks")
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_candidate_ties_at_the_cut_break_by_item_index():
    # Equal scores everywhere (every group maximum ties with the threshold): the lowest chosen item indices win.
    item_category = np.concatenate([[0], np.repeat([2, 1, 3], 400)])
    index = CategoryIndex(torch.ones(1_201, 4), CategoryLayout.from_item_category(item_category, 3))
    selected = torch.tensor([[False, False, True, True]] * 3)
    ids, _ = index.search(torch.ones(3, 4), 5, selected=selected, strategy="blocks")
    assert ids.tolist() == [[1, 2, 3, 4, 5]] * 3


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision"):
        ExactIndex(torch.randn(5, 3), precision="fp16")
