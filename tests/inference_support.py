"""Models for the tests of the inference path: a real tiny HierSRec run, and a hand-made stand-in.

`trained_run` trains HierSRec for a few epochs on a synthetic shop into a temporary run directory, once per
test process and dataset: the end-to-end tests (recommend, serve, CLI) load it like users do.

`QueryModel` exposes what the inference path uses from a query model (`QueryRecommender`): ``query(batch)``
returning an `ItemQuery`, ``score_query``, ``item_output_embeddings()``, ``score`` (= query @ embeddings.T,
padding -inf), ``score_categories`` and ``candidate_support``. With ``category_offsets`` it adds a term per
category to every score, as HierSRec's "prior" feed does. Item embeddings are their category's embedding plus
noise, and the query leans on the last click, so the category head points at the last click's category: a
structure tests can predict.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hiersrec.data.batching import SessionBatch
from hiersrec.data.prepared import PreparedDataset
from hiersrec.models.base import ItemQuery, item_query_scores

RUN_MAX_LEN = 7
_RUNS: dict[int, Path] = {}


def trained_run(dataset: PreparedDataset) -> Path:
    """A small HierSRec (d_model 16, max_len 7) trained 3 epochs on ``dataset``; cached per dataset object."""
    if id(dataset) not in _RUNS:
        from hiersrec.config import DataConfig, RunConfig, TrainConfig
        from hiersrec.models.hiersrec import HierSRecConfig
        from hiersrec.train.run import TrainingData, fit_run

        model = HierSRecConfig(d_model=16, n_heads=2, d_ff=32, max_len=RUN_MAX_LEN, d_category=8, d_feed=8)
        train = TrainConfig(epochs=3, batch_targets=256, warmup_steps=5, show_progress=False, device="cpu", seed=1)
        directory = Path(tempfile.mkdtemp(prefix="hiersrec-test-run-"))
        atexit.register(shutil.rmtree, directory, True)
        fit_run(RunConfig(data=DataConfig(), model=model, train=train), TrainingData.from_prepared(dataset), directory)
        _RUNS[id(dataset)] = directory
    return _RUNS[id(dataset)]


def trained_recommender(dataset: PreparedDataset):
    """A `Recommender` over `trained_run` with the dataset's training click counts as popularity."""
    from hiersrec.artifact import load_artifact
    from hiersrec.recommend import Recommender

    artifact = load_artifact(trained_run(dataset))
    popularity = dataset.train.item_counts(dataset.catalog.n_items)
    return Recommender(artifact.model, dataset.vocab, dataset.catalog, popularity)


@dataclass(frozen=True)
class QueryModelConfig:
    max_len: int = 7


class QueryModel(nn.Module):
    def __init__(
        self,
        item_category: np.ndarray,
        n_categories: int,
        dim: int = 16,
        seed: int = 0,
        max_len: int = 7,
        category_offsets: bool = False,
    ):
        super().__init__()
        self.item_category = torch.from_numpy(np.asarray(item_category, dtype=np.int64))
        self.use_offsets = category_offsets
        generator = torch.Generator().manual_seed(seed)
        self.config = QueryModelConfig(max_len=max_len)
        self.category_embeddings = nn.Parameter(3.0 * torch.randn(n_categories + 1, dim, generator=generator))
        noise = torch.randn(item_category.size, dim, generator=generator)
        self.item_embeddings = nn.Parameter(self.category_embeddings.data[torch.from_numpy(item_category)] + noise)

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        real = (batch.items > 0).float().unsqueeze(2)  # (B, T, 1)
        embedded = self.item_embeddings[batch.items] * real
        mean = embedded.sum(1) / real.sum(1).clamp(min=1.0)
        query = 0.8 * embedded[:, -1] + 0.2 * mean  # left padding: the last column is the last click
        category_logits = query @ self.category_embeddings.T
        category_logits[:, 0] = float("-inf")
        offsets = 0.5 * category_logits.log_softmax(dim=1).nan_to_num(neginf=0.0) if self.use_offsets else None
        return ItemQuery(vectors=query, category_logits=category_logits, category_offsets=offsets)

    def item_output_embeddings(self) -> torch.Tensor:
        return self.item_embeddings

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        return item_query_scores(query, self.item_output_embeddings().T, self.item_category)

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        return self.score_query(self.query(batch))

    @torch.no_grad()
    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        return self.query(batch).category_logits

    def candidate_support(self) -> str | None:
        return None

    def describe(self) -> dict:
        return {"name": "QueryModel"}
