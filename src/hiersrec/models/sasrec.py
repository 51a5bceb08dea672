"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), trained with full cross-entropy.

Item embeddings plus learned position embeddings go through a stack of causal self-attention blocks; the state
at a click scores every item by its inner product with the item embeddings (the input table, tied, as in the
paper). Following Klenitskiy & Vasilev (RecSys 2023, "SASRec+"), the loss is the cross-entropy over
*all* items at every position instead of the paper's binary loss with one sampled negative: it is the variant
that matches or beats BERT4Rec in their comparison, and it is the harness's default (``train.loss``, see
`hiersrec.models.item_loss`, also offers gSASRec's generalised BCE and a sampled softmax).

Deviations from the paper's reference code, each deliberate:

* pre-LN blocks (nanoGPT's layout, shared with HierSRec in `hiersrec.models._transformer`) rather than the
  reference's normalise-the-query-only layout; dropout on the residual branches and the input;
* positions count from a session's first click (its oldest kept click is position 0), not from the right end
  of a padded window, so a prefix scored on its own gets exactly the state of that click in a whole-session
  pass (what makes loss-at-every-position training and prefix evaluation agree);
* sessions longer than ``max_len`` keep their most recent clicks, as everywhere in hiersrec;
* AdamW with warm-up and decay from the one training loop (the paper: Adam at a fixed rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError, DataError
from hiersrec.models._transformer import CausalBlock, NextClickCases, align_left, init_weights
from hiersrec.models.base import ItemQuery, item_query_scores, load_weights
from hiersrec.models.item_loss import ItemLoss

# Shapes: B batch, T positions, N training targets, D d_model, V items incl. PAD.


@dataclass(frozen=True)
class SASRecConfig:
    """Hyperparameters of `SASRec` (``n_items`` comes from the data)."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    d_model: int = 64  # width of the item embeddings and of the Transformer
    n_layers: int = 2  # self-attention blocks (the paper: 2)
    n_heads: int = 1  # attention heads (the paper: 1)
    d_ff: int = 256  # hidden width of the feed-forward layers
    dropout: float = 0.2  # dropout on the residual branches
    input_dropout: float = 0.2  # dropout on the item + position embeddings
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_model": (1, 1 << 16), "n_layers": (1, 256)}
        bounds |= {"n_heads": (1, 1 << 16), "d_ff": (1, 1 << 16), "loss_chunk": (1, 1 << 20)}
        check_bounds(self, "model", {**bounds, "dropout": (0.0, 1.0), "input_dropout": (0.0, 1.0)})
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        for name in ("dropout", "input_dropout"):
            if not getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class SASRecOutput:
    """Training output: the loss and what it came from (the training loop reads these names).

    Attributes:
        loss: the mean next-item loss over the N targets (the same as ``item_loss``).
        item_loss: the next-item loss (`ItemLoss`; by default the cross-entropy over all items).
        category_loss: 0 (SASRec has no category task).
        item_query: (N, D) states at the target positions.
        target_items: (N,) the next items.
    """

    loss: torch.Tensor
    item_loss: torch.Tensor
    category_loss: torch.Tensor
    item_query: torch.Tensor
    target_items: torch.Tensor


class SASRec(nn.Module):
    """Self-attentive sequential recommender; registered as ``"sasrec"``.

    Example:
        >>> model = SASRec.from_config(SASRecConfig(d_model=16), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "sasrec"
    config_class: ClassVar[type] = SASRecConfig
    # Chosen on diginetica validation against the shared 2e-3 (README, "Every model in one harness").
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}
    item_loss: ItemLoss = ItemLoss()  # the training loop sets the run's (`hiersrec.train.loop`)

    def __init__(self, config: SASRecConfig, item_category: torch.Tensor) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("SASRecConfig needs n_items from the data: use SASRec.from_config(config, catalog)")
        if item_category.shape != (config.n_items,):
            raise ConfigError(f"item categories cover {item_category.shape[0]} items, config has {config.n_items}")
        self.config = config
        # Kept for full-ranking scores through the shared scoring function (no category term is ever added).
        self.register_buffer("item_category", item_category)
        self.items = nn.Embedding(config.n_items, config.d_model, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.d_model)
        block = (config.d_model, config.n_heads, config.d_ff)
        self.blocks = nn.ModuleList(CausalBlock(*block) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.apply(init_weights)

    @classmethod
    def from_config(
        cls, config: SASRecConfig, catalog: ItemCatalog, text_cache_dir: str | Path | None = None
    ) -> SASRec:
        """A new model for ``catalog`` (``n_items`` is set from it; SASRec reads no item metadata)."""
        config = replace(config, n_items=catalog.n_items + 1)
        return cls(config, torch.from_numpy(catalog.item_category.astype("int64")))

    @classmethod
    def from_state_dict(cls, config: SASRecConfig, state: Mapping[str, torch.Tensor]) -> SASRec:
        """The saved model (its state dict holds every tensor it needs).

        Raises:
            ConfigError: the state dict does not fit ``config``.
        """
        if "item_category" not in state:
            raise ConfigError("the weights lack the item categories (item_category)")
        return load_weights(lambda: cls(config, state["item_category"]), state)

    def _states(self, items: torch.Tensor, lengths: torch.Tensor, dropout: float) -> torch.Tensor:
        # (B, T, D) states of LEFT-padded items, realigned so that position j is the j-th real click.
        aligned = align_left(items, lengths)
        x = self.items(aligned) + self.positions.weight[: items.shape[1]]
        x = F.dropout(x, self.config.input_dropout if dropout else 0.0)
        for block in self.blocks:
            x = block(x, dropout)
        return self.final_norm(x)

    def _query(self, states: torch.Tensor) -> ItemQuery:
        return ItemQuery(vectors=states, category_logits=states.new_zeros((states.shape[0], 0)))

    def forward(self, batch: SessionBatch, target_mask: torch.Tensor | None = None) -> SASRecOutput:
        """The next-item loss (``item_loss``: by default the cross-entropy over all items) at every position."""
        query, target_items = self.encode_positions(batch, target_mask)
        total = self.item_loss(query.vectors, self.items.weight, target_items, chunk_size=self.config.loss_chunk)
        loss = total / max(target_items.numel(), 1)
        return SASRecOutput(loss, loss, torch.zeros_like(loss), query.vectors, target_items)

    def reference_loss(self, query: ItemQuery, target_items: torch.Tensor) -> torch.Tensor:
        """The loss written plainly: mean ``-log softmax(states @ E.T)[target]`` over real items."""
        logits = query.vectors.float() @ self.items.weight.float().T
        return F.cross_entropy(logits[:, 1:], target_items - 1)

    def encode_positions(
        self, batch: SessionBatch, target_mask: torch.Tensor | None = None
    ) -> tuple[ItemQuery, torch.Tensor]:
        """Queries at every target position of whole LEFT-padded sessions, and the (N,) targets, row by row."""
        cases = NextClickCases.of(batch, self.config.max_len, target_mask)
        dropout = self.config.dropout if self.training else 0.0
        states = self._states(cases.inputs, cases.input_lengths, dropout)  # (B, T-1, D)
        return self._query(states[cases.selected]), cases.targets

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        """The item query at the last real click of each LEFT-padded session (no dropout).

        Raises:
            DataError: a session has no click.
        """
        items, lengths = batch.items[:, -self.config.max_len :], batch.lengths.clamp(max=self.config.max_len)
        if (lengths < 1).any():
            raise DataError("cannot score an empty session: every row needs at least one known click")
        states = self._states(items, lengths, dropout=0.0)
        last = states[torch.arange(states.shape[0], device=states.device), lengths - 1]
        return self._query(last.float())

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) float32 inner products with every item embedding; column 0 (PAD) = -inf."""
        return item_query_scores(query, self.items.weight.detach().float().T, self.item_category)

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 next-item scores, column 0 (PAD) = -inf."""
        return self.score_query(self.query(batch))

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **asdict(self.config)}
