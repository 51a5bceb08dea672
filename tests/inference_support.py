"""A tiny stand-in for HierSRec's inference contract, for tests of the retrieval and serving code.

`QueryModel` exposes what the inference path uses from HierSRec: ``encode(batch)`` returning an item query
and category logits, ``item_output_embeddings()``, ``score`` (= query @ embeddings.T, padding -inf) and
``score_categories``. Item embeddings are their category's embedding plus noise, and the query leans on the
last click, so the category head points at the last click's category: a structure tests can predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hiersrec.data.batching import SessionBatch


@dataclass
class Query:
    item_query: torch.Tensor  # (B, D)
    category_logits: torch.Tensor  # (B, C)


@dataclass(frozen=True)
class QueryModelConfig:
    max_len: int = 7


class QueryModel(nn.Module):
    def __init__(self, item_category: np.ndarray, n_categories: int, dim: int = 16, seed: int = 0, max_len: int = 7):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.config = QueryModelConfig(max_len=max_len)
        self.category_embeddings = nn.Parameter(3.0 * torch.randn(n_categories + 1, dim, generator=generator))
        noise = torch.randn(item_category.size, dim, generator=generator)
        self.item_embeddings = nn.Parameter(self.category_embeddings.data[torch.from_numpy(item_category)] + noise)

    def encode(self, batch: SessionBatch) -> Query:
        real = (batch.items > 0).float().unsqueeze(2)  # (B, T, 1)
        embedded = self.item_embeddings[batch.items] * real
        mean = embedded.sum(1) / real.sum(1).clamp(min=1.0)
        query = 0.8 * embedded[:, -1] + 0.2 * mean  # left padding: the last column is the last click
        category_logits = query @ self.category_embeddings.T
        category_logits[:, 0] = float("-inf")
        return Query(item_query=query, category_logits=category_logits)

    def item_output_embeddings(self) -> torch.Tensor:
        return self.item_embeddings

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        scores = self.encode(batch).item_query @ self.item_output_embeddings().T
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        return self.encode(batch).category_logits

    def describe(self) -> dict:
        return {"name": "QueryModel"}
