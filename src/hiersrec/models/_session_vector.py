"""What the session-vector baselines share (NARM, STAMP, SR-GNN): one vector per prefix, scored against the items.

A subclass builds its layers in ``__init__(config)``, keeps its item table as ``self.items`` (an
``nn.Embedding`` whose rows are also the output vectors) and defines ``_session_vectors(items, rows,
positions)``: the (N, D) vectors of LEFT-ALIGNED ``items`` read at (rows, positions), where a prefix read inside
a longer row must get exactly the vector it gets alone. Everything else is here: building and loading, the
next-item loss (`hiersrec.models.item_loss`) at every target position of whole sessions, and scoring the last
click of each session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import DataError
from hiersrec.models._transformer import NextClickCases, align_left
from hiersrec.models.base import ItemQuery, load_weights
from hiersrec.models.item_loss import ItemLoss


@dataclass
class NextItemOutput:
    """Training output (the training loop reads these names).

    Attributes:
        loss: the mean next-item loss over the N targets (the same as ``item_loss``).
        item_loss: the next-item loss (`ItemLoss`; by default the cross-entropy over all items).
        category_loss: 0 (these models have no category task).
        item_query: (N, D) session vectors at the target positions.
        target_items: (N,) the next items.
    """

    loss: torch.Tensor
    item_loss: torch.Tensor
    category_loss: torch.Tensor
    item_query: torch.Tensor
    target_items: torch.Tensor


class SessionVectorModel(nn.Module):
    """A model scoring ``items.weight @ session_vector``; subclasses set ``name``, ``label``, ``config_class``."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the paper's name, for messages
    config_class: ClassVar[type] = object
    item_loss: ItemLoss = ItemLoss()  # the training loop sets the run's (`hiersrec.train.loop`)
    items: nn.Embedding
    config: Any

    @classmethod
    def from_config(cls, config: Any, catalog: ItemCatalog, text_cache_dir: str | Path | None = None) -> Any:
        """A new model for ``catalog`` (``n_items`` is set from it; no item metadata is read)."""
        return cls(replace(config, n_items=catalog.n_items + 1))

    @classmethod
    def from_state_dict(cls, config: Any, state: Mapping[str, torch.Tensor]) -> Any:
        """The saved model.

        Raises:
            ConfigError: the state dict does not fit ``config``.
        """
        return load_weights(lambda: cls(config), state)

    def _session_vectors(self, items: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_positions(
        self, batch: SessionBatch, target_mask: torch.Tensor | None = None
    ) -> tuple[ItemQuery, torch.Tensor]:
        """Session vectors at every target position of whole LEFT-padded sessions, and the (N,) targets, row by row."""
        cases = NextClickCases.of(batch, self.config.max_len, target_mask)
        rows, positions = cases.selected.nonzero(as_tuple=True)  # row by row, as the targets
        vectors = self._session_vectors(align_left(cases.inputs, cases.input_lengths), rows, positions)
        return _query(vectors), cases.targets

    def forward(self, batch: SessionBatch, target_mask: torch.Tensor | None = None) -> NextItemOutput:
        """The next-item loss (``item_loss``: by default the cross-entropy over all items) at every target position."""
        query, targets = self.encode_positions(batch, target_mask)
        total = self.item_loss(query.vectors, self.items.weight, targets, chunk_size=self.config.loss_chunk)
        loss = total / max(targets.numel(), 1)
        return NextItemOutput(loss, loss, torch.zeros_like(loss), query.vectors, targets)

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        """The session vector at the last real click of each LEFT-padded session (no dropout).

        Raises:
            DataError: a session has no click.
        """
        items, lengths = batch.items[:, -self.config.max_len :], batch.lengths.clamp(max=self.config.max_len)
        if (lengths < 1).any():
            raise DataError("cannot score an empty session: every row needs at least one known click")
        rows = torch.arange(items.shape[0], device=items.device)
        return _query(self._session_vectors(align_left(items, lengths), rows, lengths - 1).float())

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) float32 inner products with every item vector; column 0 (PAD) = -inf."""
        scores = query.vectors.float() @ self.items.weight.detach().float().T
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 next-item scores, column 0 (PAD) = -inf."""
        return self.score_query(self.query(batch))

    def candidate_support(self) -> str:
        """Why the model cannot rank category candidates."""
        return f"{self.label} has no category head: it can only rank every item"

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **asdict(self.config)}


def _query(vectors: torch.Tensor) -> ItemQuery:
    return ItemQuery(vectors=vectors, category_logits=vectors.new_zeros((vectors.shape[0], 0)))
