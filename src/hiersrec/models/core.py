"""CORE: consistent representation space for session recommendation (Hou et al., SIGIR 2022), per position.

CORE keeps the session in the item embedding space. Its representation-consistent encoder makes the session
vector a weighted sum of the session's own INPUT item embeddings, ``s = sum_j a_j x_j``, with weights

* ``variant = "ave"`` (CORE-ave): uniform, ``a_j = 1 / t``;
* ``variant = "trm"`` (CORE-trm, the default): a causal Transformer over the embeddings plus learned positions,
  a linear layer to one logit per click and a softmax over the prefix's clicks.

Its robust distance measuring scores item i by ``cos(s, v_i) / tau`` against the L2-normalised item
embeddings (the same table), with dropout on the session's item embeddings (``session_dropout``) and on the
item table in the loss (``item_dropout``), trained with the cross-entropy over all items.

Position t's weights cover the clicks up to t only (the Transformer is causal, as in the authors' CORE-trm,
and the softmax runs over j <= t), so the loss at every position of a whole session is the loss of each
prefix scored alone (a test checks it). Defaults: the authors' ``props/core_trm.yaml`` and ``core_ave.yaml``
(github.com/RUCAIBox/CORE): width 100, 2 layers, 2 heads, inner width 256, dropout 0.5 in the Transformer,
session and item dropout 0.2, temperature 0.07; item embeddings initialised uniform in +-1/sqrt(width), the
Transformer with normal(0, 0.02).

Deviations from the authors' code (RecBole's Transformer), each deliberate:

* the Transformer is hiersrec's shared causal pre-LN block (`hiersrec.models._transformer.CausalBlock`) with
  dropout on the residual branches only, followed by a final LayerNorm (the code: post-LN BERT layers with
  dropout 0.5 on the attention probabilities too, LayerNorm epsilon 1e-12);
* the padding item is never a candidate (RecBole's softmax includes the padding column);
* AdamW with warm-up and decay, gradient clipping and weight decay on the Transformer's matrices from the one
  training loop (the code: Adam at 0.001, batches of 2048 prefixes);
* sessions longer than ``max_len`` keep their most recent clicks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError, DataError
from hiersrec.models._transformer import CausalBlock, NextClickCases, align_left, init_weights, prefix_weighted_sums
from hiersrec.models.base import ItemQuery, load_weights
from hiersrec.models.item_loss import ItemLoss

# Shapes: B batch, T positions, N training targets, D d_model, V items incl. PAD.

Variant = Literal["ave", "trm"]


@dataclass(frozen=True)
class COREConfig:
    """Hyperparameters of `CORE` (``n_items`` comes from the data); defaults: the authors' CORE-trm."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    variant: Variant = "trm"  # "ave": mean of the input embeddings; "trm": Transformer-weighted sum
    d_model: int = 100  # width of the item embeddings (and of the Transformer)
    n_layers: int = 2  # trm: Transformer blocks
    n_heads: int = 2  # trm: attention heads
    d_ff: int = 256  # trm: hidden width of the feed-forward layers
    dropout: float = 0.5  # trm: dropout on the Transformer's input and residual branches
    session_dropout: float = 0.2  # dropout on the session's item embeddings (before the weighted sum)
    item_dropout: float = 0.2  # dropout on the item table in the training loss
    temperature: float = 0.07  # tau: scores are cos(s, v_i) / tau
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_model": (1, 1 << 16), "n_layers": (1, 256)}
        bounds |= {"n_heads": (1, 1 << 16), "d_ff": (1, 1 << 16), "loss_chunk": (1, 1 << 20)}
        bounds |= {"dropout": (0.0, 1.0), "session_dropout": (0.0, 1.0), "item_dropout": (0.0, 1.0)}
        check_bounds(self, "model", {**bounds, "temperature": (1e-4, 1e4)})
        if self.variant not in ("ave", "trm"):
            raise ConfigError(f"model.variant must be 'ave' or 'trm', not {self.variant!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        for name in ("dropout", "session_dropout", "item_dropout"):
            if not getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class COREOutput:
    """Training output (the training loop reads these names).

    Attributes:
        loss: the mean next-item loss over the N targets (the same as ``item_loss``).
        item_loss: the next-item loss (`ItemLoss`; by default the cross-entropy over all items).
        category_loss: 0 (CORE has no category task).
        item_query: (N, D) unit session vectors divided by tau, at the target positions.
        target_items: (N,) the next items.
    """

    loss: torch.Tensor
    item_loss: torch.Tensor
    category_loss: torch.Tensor
    item_query: torch.Tensor
    target_items: torch.Tensor


class CORE(nn.Module):
    """Session vectors as weighted sums of their item embeddings, cosine scores; registered as ``"core"``.

    Example:
        >>> model = CORE.from_config(COREConfig(d_model=16, variant="ave"), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "core"
    config_class: ClassVar[type] = COREConfig
    # Chosen on diginetica validation against the shared 2e-3 (README, "Every model in one harness").
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}
    item_loss: ItemLoss = ItemLoss()  # the training loop sets the run's (`hiersrec.train.loop`)

    def __init__(self, config: COREConfig) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("COREConfig needs n_items from the data: use CORE.from_config(config, catalog)")
        self.config = config
        self.items = nn.Embedding(config.n_items, config.d_model, padding_idx=0)
        if config.variant == "trm":
            self.positions = nn.Embedding(config.max_len, config.d_model)
            self.input_norm = nn.LayerNorm(config.d_model)
            block = (config.d_model, config.n_heads, config.d_ff)
            self.blocks = nn.ModuleList(CausalBlock(*block) for _ in range(config.n_layers))
            self.final_norm = nn.LayerNorm(config.d_model)
            self.weight_logit = nn.Linear(config.d_model, 1)  # one logit per click
            self.apply(init_weights)
        bound = 1.0 / math.sqrt(config.d_model)
        with torch.no_grad():
            self.items.weight.uniform_(-bound, bound)
            self.items.weight[0].zero_()

    @classmethod
    def from_config(cls, config: COREConfig, catalog: ItemCatalog, text_cache_dir: str | Path | None = None) -> CORE:
        """A new model for ``catalog`` (``n_items`` is set from it; CORE reads no item metadata)."""
        return cls(replace(config, n_items=catalog.n_items + 1))

    @classmethod
    def from_state_dict(cls, config: COREConfig, state: Mapping[str, torch.Tensor]) -> CORE:
        """The saved model.

        Raises:
            ConfigError: the state dict does not fit ``config``.
        """
        return load_weights(lambda: cls(config), state)

    def _click_logits(self, embedded: torch.Tensor) -> torch.Tensor:
        # (B, T) the weight logit of every click of left-aligned rows (CORE-trm's Transformer + linear layer).
        dropout = self.config.dropout if self.training else 0.0
        x = self.input_norm(embedded + self.positions.weight[: embedded.shape[1]])
        x = F.dropout(x, dropout)
        for block in self.blocks:
            x = block(x, dropout)
        return self.weight_logit(self.final_norm(x)).squeeze(2)

    def _session_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T, D) unit session vectors / tau of LEFT-ALIGNED ``items`` after each click.

        Position t is the softmax-weighted (CORE-ave: uniform) sum of the input embeddings of clicks 1..t.
        """
        embedded = F.dropout(self.items(items), self.config.session_dropout, self.training)  # (B, T, D)
        # CORE-ave: equal logits, so the softmax over the prefix is the mean.
        logits = self._click_logits(embedded) if self.config.variant == "trm" else embedded.new_zeros(items.shape)
        sessions = prefix_weighted_sums(logits, embedded)
        return F.normalize(sessions, dim=2) / self.config.temperature

    def item_table(self) -> torch.Tensor:
        """(V, D) L2-normalised item embeddings (item dropout first while training); row 0 is padding."""
        table = F.dropout(self.items.weight, self.config.item_dropout, self.training)
        return F.normalize(table, dim=1)

    def encode_positions(
        self, batch: SessionBatch, target_mask: torch.Tensor | None = None
    ) -> tuple[ItemQuery, torch.Tensor]:
        """Queries at every target position of whole LEFT-padded sessions, and the (N,) targets, row by row."""
        cases = NextClickCases.of(batch, self.config.max_len, target_mask)
        sessions = self._session_vectors(align_left(cases.inputs, cases.input_lengths))
        return _query(sessions[cases.selected]), cases.targets

    def forward(self, batch: SessionBatch, target_mask: torch.Tensor | None = None) -> COREOutput:
        """The next-item loss of ``cos / tau`` scores (``item_loss``: by default the cross-entropy over all items)."""
        query, targets = self.encode_positions(batch, target_mask)
        total = self.item_loss(query.vectors, self.item_table(), targets, chunk_size=self.config.loss_chunk)
        loss = total / max(targets.numel(), 1)
        return COREOutput(loss, loss, torch.zeros_like(loss), query.vectors, targets)

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        """The session vector / tau at the last real click of each LEFT-padded session (no dropout).

        Raises:
            DataError: a session has no click.
        """
        items, lengths = batch.items[:, -self.config.max_len :], batch.lengths.clamp(max=self.config.max_len)
        if (lengths < 1).any():
            raise DataError("cannot score an empty session: every row needs at least one known click")
        sessions = self._session_vectors(align_left(items, lengths))
        return _query(sessions[torch.arange(sessions.shape[0], device=sessions.device), lengths - 1].float())

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) float32 scores ``cos(s, v_i) / tau`` (no item dropout); column 0 (PAD) = -inf."""
        scores = query.vectors.float() @ F.normalize(self.items.weight.detach().float(), dim=1).T
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 next-item scores, column 0 (PAD) = -inf."""
        return self.score_query(self.query(batch))

    def candidate_support(self) -> str:
        """Why CORE cannot rank category candidates."""
        return "CORE has no category head: it can only rank every item"

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **asdict(self.config)}


def _query(vectors: torch.Tensor) -> ItemQuery:
    return ItemQuery(vectors=vectors, category_logits=vectors.new_zeros((vectors.shape[0], 0)))
