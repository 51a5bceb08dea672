import numpy as np
import pytest
import torch

from hiersrec.retrieval.category import CandidateBudget, CategoryLayout, candidate_mask, select_categories
from hiersrec.retrieval.index import CategoryIndex, ExactIndex, _top_columns_exact, top_columns, top_k

NEG = float("-inf")
N_ITEMS, N_CATEGORIES, DIM = 37, 5, 16


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(11)
    item_category = np.concatenate([[0], rng.integers(1, N_CATEGORIES + 1, N_ITEMS)])
    item_category[1:6] = [1, 2, 3, 4, 5]  # every category non-empty
    generator = torch.Generator().manual_seed(11)
    embeddings = torch.randn(N_ITEMS + 1, DIM, generator=generator)
    queries = torch.randn(9, DIM, generator=generator)
    category_scores = torch.randn(9, N_CATEGORIES + 1, generator=generator)
    return item_category, embeddings, queries, category_scores


def _naive(embeddings, item_category, queries, selected, k, exclude=None):
    # Reference: for each row, gather the candidate items, score them, sort by (score desc, item asc).
    results = []
    for row in range(queries.shape[0]):
        items = [i for i in range(1, len(item_category)) if selected[row, item_category[i]]]
        if exclude is not None:
            items = [i for i in items if i not in exclude[row].tolist()]
        scores = (embeddings[items] @ queries[row]).tolist()
        ranked = sorted(zip(scores, items, strict=True), key=lambda pair: (-pair[0], pair[1]))[:k]
        results.append(([i for _, i in ranked], [s for s, _ in ranked]))
    return results


def test_top_k_breaks_ties_by_id_and_keeps_inf_padding():
    scores = torch.tensor([[0.5, 0.75, 0.5, 0.5, 0.25], [NEG, NEG, 0.2, NEG, NEG]])
    ids, values = top_k(scores, 3)
    assert ids.tolist() == [[1, 0, 2], [2, 0, 1]]
    assert values[0].tolist() == [0.75, 0.5, 0.5] and values[1, 1:].tolist() == [NEG, NEG]
    ids, _ = top_k(scores[:1], 3, ids=torch.tensor([40, 30, 20, 10, 0]))
    assert ids.tolist() == [[30, 10, 20]]  # three tie at 0.5: the two lowest ids 10 and 20 are kept
    assert top_k(scores, 9)[0].shape == (2, 5)


def test_top_k_all_tied_gives_lowest_ids():
    assert top_k(torch.zeros(1, 1000), 4)[0].tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("n_columns", [6_400, 6_437])  # a whole number of blocks, and a ragged tail
@pytest.mark.parametrize("k", [1, 20])
def test_block_prefilter_keeps_exactly_the_top_columns_of_a_full_ranking(n_columns, k):
    # Wide rows go through the block pre-filter; its sets must equal a full torch.topk pass's, ties included:
    # coarse integer scores (many ties at the cut), rows of -inf with a few real entries, and shuffled ids.
    generator = torch.Generator().manual_seed(n_columns + k)
    scores = torch.randint(0, 60, (12, n_columns), generator=generator).float()
    scores[3] = NEG
    scores[3, torch.randperm(n_columns, generator=generator)[:7]] = 1.0  # fewer real entries than k = 20
    scores[4] = 0.0  # all tied: the lowest ids win
    scores[5, -3:] = 100.0  # the best entries in the ragged tail
    scores[6] = torch.randn(n_columns, generator=generator)  # no ties at all
    scores[7] = torch.randint(0, 5_000, (n_columns,), generator=generator).float()  # a few ties, rarely at the cut
    scores[8] = torch.randn(n_columns, generator=generator)
    scores[8, 10 : 10 + k + 2] = 50.0  # a tie at the cut inside one block, nothing outside close
    ids = torch.randperm(n_columns, generator=generator)
    fast = top_columns(scores, k, ids)
    reference = _top_columns_exact(scores, k, ids.expand(12, n_columns))
    assert n_columns >= 4 * k * 64  # the pre-filter is used at these widths
    for row in range(12):
        assert sorted(fast[row].tolist()) == sorted(reference[row].tolist()), row


@pytest.mark.parametrize("strategy", ["blocks", "dense"])
def test_candidate_ties_break_by_item_index_like_exact(strategy):
    # Every score tied: a batch over all categories returns the lowest item indices, as ExactIndex does.
    item_category = np.array([0, 2, 1, 2, 1, 2, 1, 2])
    index = CategoryIndex(torch.ones(8, 4), CategoryLayout.from_item_category(item_category, 2))
    everything = torch.ones(3, 3, dtype=torch.bool)
    ids, _ = index.search(torch.ones(3, 4), 3, selected=everything, strategy=strategy)
    assert ids.tolist() == [[1, 2, 3]] * 3 == ExactIndex(torch.ones(8, 4)).search(torch.ones(3, 4), 3)[0].tolist()
    assert index.search(torch.ones(1, 4), 3, selected=everything[:1])[0].tolist() == [[1, 2, 3]]


def test_exact_index_equals_a_full_sort_and_honours_exclusions(world):
    item_category, embeddings, queries, _ = world
    everything = torch.ones(9, N_CATEGORIES + 1, dtype=torch.bool)
    exclude = torch.tensor([[3, 7, 0]] * 9)
    ids, scores = ExactIndex(embeddings).search(queries, 10, exclude=exclude)
    for row, (ref_ids, ref_scores) in enumerate(_naive(embeddings, item_category, queries, everything, 10, exclude)):
        assert ids[row].tolist() == ref_ids
        torch.testing.assert_close(scores[row], torch.tensor(ref_scores))


def test_exact_index_k_beyond_the_catalogue_returns_every_item_once(world):
    _, embeddings, queries, _ = world
    ids, scores = ExactIndex(embeddings).search(queries[:2], 1000)
    assert ids.shape == (2, N_ITEMS) and torch.isfinite(scores).all()
    assert sorted(ids[0].tolist()) == list(range(1, N_ITEMS + 1))


def test_full_budget_equals_exact_ranking(world):
    item_category, embeddings, queries, category_scores = world
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget(fraction=1.0))
    assert selected[:, 1:].all()
    for rows, strategy in [(slice(0, 9), "blocks"), (slice(0, 9), "dense"), (slice(4, 5), "auto")]:
        got_ids, got_scores = index.search(queries[rows], 20, selected=selected[rows], strategy=strategy)
        ref_ids, ref_scores = ExactIndex(embeddings).search(queries[rows], 20)
        assert torch.equal(got_ids, ref_ids)
        torch.testing.assert_close(got_scores, ref_scores)


@pytest.mark.parametrize("budget", ["10%", "30%", "category:1", "category:2"])
@pytest.mark.parametrize("with_exclusions", [False, True])
@pytest.mark.parametrize("strategy", ["blocks", "dense"])
def test_contiguous_layout_equals_a_naive_gather(world, budget, with_exclusions, strategy):
    item_category, embeddings, queries, category_scores = world
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget.parse(budget))
    exclude = torch.tensor([[1, 2, 3, 4, 5, 0]] * 9) if with_exclusions else None
    ids, scores = index.search(queries, 8, selected=selected, exclude=exclude, strategy=strategy)
    for row, (ref_ids, ref_scores) in enumerate(_naive(embeddings, item_category, queries, selected, 8, exclude)):
        n = len(ref_ids)
        assert ids[row, :n].tolist() == ref_ids
        torch.testing.assert_close(scores[row, :n], torch.tensor(ref_scores))
        assert ids[row, n:].eq(0).all() and scores[row, n:].eq(NEG).all()  # fewer candidates than k: padding
        one_ids, _ = index.search(
            queries[row : row + 1],
            8,
            selected=selected[row : row + 1],
            exclude=(None if exclude is None else exclude[row : row + 1]),
        )
        assert torch.equal(one_ids[0], ids[row])


def test_candidate_index_matches_masked_full_scores(world):
    item_category, embeddings, queries, category_scores = world
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget(fraction=0.3))
    full = queries @ embeddings.T
    full[:, 0] = NEG
    masked = full.masked_fill(~candidate_mask(selected, torch.from_numpy(item_category)), NEG)
    ref_ids, ref_scores = top_k(masked, 5)
    ids, scores = index.search(queries, 5, selected=selected)
    assert torch.equal(ids, ref_ids.masked_fill(ref_scores == NEG, 0))
    assert (
        index.n_candidates(selected).tolist()
        == candidate_mask(selected, torch.from_numpy(item_category)).sum(1).tolist()
    )


@pytest.mark.parametrize("strategy", ["blocks", "dense"])
def test_no_category_chosen_gives_only_padding(world, strategy):
    item_category, embeddings, queries, _ = world
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    nothing = torch.zeros(2, N_CATEGORIES + 1, dtype=torch.bool)
    for rows in (slice(0, 2), slice(0, 1)):
        ids, scores = index.search(queries[rows], 4, selected=nothing[rows], strategy=strategy)
        assert ids.eq(0).all() and scores.eq(NEG).all() and ids.shape[1] == 4


def test_candidate_support_is_the_models_answer():
    from hiersrec.models import make_baseline
    from hiersrec.models.base import candidate_support
    from inference_support import QueryModel

    assert candidate_support(QueryModel(np.array([0, 1, 2]), 2)) is None
    assert "can only rank every item" in candidate_support(object())
    assert "can only rank every item" in candidate_support(make_baseline("vstan"))


@pytest.mark.parametrize("strategy", ["blocks", "dense"])
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("with_session_items", [False, True])
def test_item_query_terms_make_candidates_score_as_full_ranking(world, strategy, normalise, with_session_items):
    # Per-category offsets and within-category normalisation (HierSRec's "prior" and "factorised" feeds), and
    # items included whatever their category (the session's own): the candidates' scores are the full-ranking
    # scores of the same items, for one query and for a batch, and the top k is the full ranking's top k
    # among them.
    from hiersrec.models.base import ItemQuery, item_query_scores

    item_category, embeddings, queries, category_scores = world
    index = CategoryIndex(embeddings, CategoryLayout.from_item_category(item_category, N_CATEGORIES))
    selected = select_categories(category_scores, index.sizes, CandidateBudget(fraction=0.3))
    generator = torch.Generator().manual_seed(5)
    offsets = torch.randn(queries.shape[0], N_CATEGORIES + 1, generator=generator)
    query = ItemQuery(queries, torch.zeros_like(offsets), offsets, normalise)
    full = item_query_scores(query, embeddings.T, torch.from_numpy(item_category))
    include = torch.randint(0, N_ITEMS + 1, (queries.shape[0], 6), generator=generator) if with_session_items else None
    allowed = selected[:, torch.from_numpy(item_category)]
    if include is not None:
        allowed = allowed | torch.zeros_like(allowed).scatter_(1, include, True)
        allowed[:, 0] = False
    for rows in (slice(0, None), slice(0, 1)):
        extra = None if include is None else include[rows]
        ids, scores = index.search(query.rows(rows), 5, selected=selected[rows], include=extra, strategy=strategy)
        expected = full[rows].gather(1, ids)
        real = ids > 0
        torch.testing.assert_close(scores[real], expected[real], rtol=1e-5, atol=1e-5)
        reference_ids, _ = top_k(full[rows].masked_fill(~allowed[rows], NEG), 5)
        assert torch.equal(ids[real], reference_ids[real])
