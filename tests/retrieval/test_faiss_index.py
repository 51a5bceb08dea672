import numpy as np
import pytest
import torch

pytest.importorskip("faiss")
from hiersrec.errors import ConfigError  # noqa: E402
from hiersrec.retrieval.faiss_index import FaissIndex  # noqa: E402
from hiersrec.retrieval.index import ExactIndex  # noqa: E402


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(5)
    return torch.randn(301, 16, generator=generator), torch.randn(12, 16, generator=generator)


def test_flat_faiss_equals_exact(data):
    embeddings, queries = data
    exclude = torch.tensor([[1, 2, 0]] * 12)
    ids, scores = FaissIndex(embeddings, "flat").search(queries, 10, exclude=exclude)
    ref_ids, ref_scores = ExactIndex(embeddings).search(queries, 10, exclude=exclude)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "params"), [("hnsw", {"ef_search": 200}), ("ivf", {"n_lists": 8, "n_probe": 8})])
def test_approximate_indexes_recover_the_exact_top_items_when_searching_widely(data, kind, params):
    embeddings, queries = data
    ids, _ = FaissIndex(embeddings, kind, **params).search(queries, 10)
    ref_ids, _ = ExactIndex(embeddings).search(queries, 10)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, ref_ids, strict=True)])
    assert recall >= 0.95  # IVF probing every cell is exact; HNSW with a wide beam on 300 items nearly so
    assert ids.min() >= 1 and ids.max() <= 300


def test_k_beyond_the_catalogue_and_unknown_kind(data):
    embeddings, queries = data
    ids, scores = FaissIndex(embeddings, "flat").search(queries[:1], 1000)
    assert ids.shape == (1, 300) and sorted(ids[0].tolist()) == list(range(1, 301))
    with pytest.raises(ConfigError, match="unknown FAISS index kind"):
        FaissIndex(embeddings, "lsh")
