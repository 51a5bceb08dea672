"""HierSRec: a metadata-aware causal Transformer with a hierarchical next-category -> next-item head.

Oh, Shalaby, Afsharinejad and Cui, "Hierarchical Multi-Task Learning Framework for Session-based
Recommendations", ORSUM @ RecSys 2023 (arXiv 2309.06533); the design follows ``method.md`` §1.

* Item input ``E_i = Proj(concat(E_id[i], E_cat[c(i)], E_meta[i]))`` where the metadata are extra
  categorical attributes, numeric features and text (hashed token bags or frozen MiniLM vectors).
* A causal pre-LN Transformer with learned positions encodes the session. Positions count from the first
  real click (not from the padding), so a prefix scored on its own gets exactly the state of that
  position in a whole-session forward pass; sessions longer than ``max_len`` keep their last clicks.
* Hierarchical multi-task head: the state ``h`` first predicts the next category (``p_cat``), and that
  prediction is fed into next-item prediction by one of five category feeds (``"concat"``, the paper's,
  ``"expected"``, ``"factorised"``, ``"prior"``, ``"none"``), all defined in `hiersrec.models.category_feed`.
  Item scores are ``q . v_i`` against an item output representation ``v``: the input item encoder (tied,
  so category and metadata reach rare items), its id embeddings only (SASRec's tying), or a separate
  encoder (``output_embedding``); optionally cosine scores times ``score_scale``
  and a per-item bias (folded in as one more dimension, so scores stay a plain dot product).
* Readout (``readout``): the item query starts from the last click's state (``"state"``), or, as in CORE (Hou
  et al., SIGIR 2022), from a softmax-weighted sum of the session's own input item representations, the
  weights read from the states (``"items"``): the query then lies in the space the items are scored in, and an
  item already clicked sits close to it. ``"both"`` adds the two; ``"gated"`` mixes their directions with a
  gate read from the state, at the state's length. The sum is dominated by the state (layer-normalised, length
  about sqrt(D), against embeddings of std 0.02), so it learns little from the items; the gate lets each
  session lean on its own items (a shop of repeats and close substitutes) or on the state (a shop of
  transitions to items not yet seen).
* Category repeats (``category_repeat``): the category head adds two learned logit bonuses, one for the last
  click's category and one for every category already in the session, so it starts near "repeat the last
  category" (which a plain head trails at acc@1 on diginetica) and its weights can spend themselves on the
  switches.
* Loss ``L_item + lambda L_cat`` (cross-entropy over all items / all categories) at every position of
  whole sessions in one forward pass: the same (prefix, next item) cases as prefix augmentation.

Deviation from the paper's sketch: the feed FFN is residual (``q = h + FFN(...)``), so the head starts as
the flat model and learns what the category prediction adds; this trains more stably.

The loss is written twice: `reference_item_loss` spells it out with the (N, V) logits in memory, as one
reads it in the paper; training runs the run's `hiersrec.models.item_loss.ItemLoss`, by default ("auto") the
same value and gradients, for large catalogues without ever holding those logits (a test checks that they
agree). The sampled losses of ``train.loss`` ("sampled", "gbce") train the feeds whose loss is a softmax over
every item ("concat", "expected", "none"); "factorised" and "prior" need the exact ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.text import SENTENCE_EMBEDDING_DIM, hashed_token_bags, sentence_embeddings
from hiersrec.errors import ConfigError, DataError
from hiersrec.models._transformer import (
    CausalBlock,
    NextClickCases,
    align_left,
    init_weights,
    prefix_weighted_sums,
)
from hiersrec.models.base import ItemQuery, item_query_scores, load_weights
from hiersrec.models.category_feed import CATEGORY_FEEDS, CategoryFeed, CategoryFeedName
from hiersrec.models.item_loss import ItemLoss

# Shapes: B batch, T positions, N training targets, D d_model, D' item query width (D, +1 with item_bias),
# V items incl. PAD, C categories incl. PAD.

TextFeatures = Literal["none", "hashed", "minilm"]
OutputEmbedding = Literal["encoder", "ids", "separate"]
Readout = Literal["state", "items", "both", "gated"]
READOUTS = ("state", "items", "both", "gated")


@dataclass(frozen=True)
class HierSRecConfig:
    """Hyperparameters of `HierSRec` (``n_items`` / ``n_categories`` come from the data)."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    n_categories: int = 0  # C, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    d_model: int = 64  # width of the Transformer and of the item representations
    n_layers: int = 2  # Transformer blocks
    n_heads: int = 2  # attention heads
    d_ff: int = 256  # hidden width of the feed-forward blocks (and of the category-feed FFN)
    dropout: float = 0.2  # dropout on the residual branches (attention and feed-forward outputs)
    input_dropout: float = 0.2  # dropout on the item input embeddings
    use_category_input: bool = True  # E_cat[c(i)] in the item representation
    d_category: int = 32  # width of the category embedding
    categorical_features: tuple[str, ...] = ()  # catalogue columns embedded as extra attributes
    numeric_features: tuple[str, ...] = ()  # catalogue columns used as numbers (signed log, standardised)
    d_attribute: int = 16  # width of each extra categorical attribute, and of all numeric features together
    text_features: TextFeatures = "none"  # item text: "hashed" token bags or frozen "minilm" vectors
    text_buckets: int = 16384  # hash buckets of the token bags
    d_text: int = 32  # width of the text part of the item representation
    category_feed: CategoryFeedName = "concat"  # how the category prediction reaches the item head
    d_feed: int = 32  # width of the projected category distribution ("concat")
    category_loss_weight: float = 0.5  # lambda: weight of the next-category loss
    output_embedding: OutputEmbedding = "encoder"  # items scored against: the input item encoder (id, category,
    # metadata: tied), its id embeddings only (SASRec's tying), or a separate encoder of their own
    item_bias: bool = False  # learned per-item score bias
    score_scale: float = 0.0  # > 0: cosine(q, v) * score_scale instead of the dot product
    readout: Readout = "state"  # the item query starts from the last click's state, from CORE's weighted sum of
    # the session's own input item representations ("items"; weights from the states), from their sum ("both"),
    # or from their directions mixed by a gate read from the state ("gated")
    category_repeat: bool = False  # learned category-logit bonuses for the last click's category and for every
    # category already in the session
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        check_bounds(self, "model", _BOUNDS)
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        for name in ("dropout", "input_dropout"):
            if not getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.category_feed not in CATEGORY_FEEDS:
            raise ConfigError(
                f"model.category_feed must be one of {', '.join(CATEGORY_FEEDS)}, not {self.category_feed!r}"
            )
        if self.output_embedding not in ("encoder", "ids", "separate"):
            raise ConfigError(f"model.output_embedding must be encoder, ids or separate, not {self.output_embedding!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"model.readout must be one of {', '.join(READOUTS)}, not {self.readout!r}")
        if self.text_features not in ("none", "hashed", "minilm"):
            raise ConfigError(f"model.text_features must be none, hashed or minilm, not {self.text_features!r}")

    def with_catalog(self, catalog: ItemCatalog) -> HierSRecConfig:
        """This config with ``n_items`` / ``n_categories`` set from ``catalog`` (both counting PAD)."""
        return _replace(self, n_items=catalog.n_items + 1, n_categories=catalog.n_categories + 1)


_SIZE = 1 << 16  # far past any width or depth this model trains at; bounds memory before anything is allocated
_BOUNDS = {
    "n_items": (0, 1 << 31),
    "n_categories": (0, 1 << 31),
    "max_len": (1, 10_000),
    "d_model": (1, _SIZE),
    "n_layers": (1, 256),
    "n_heads": (1, _SIZE),
    "d_ff": (1, _SIZE),
    "d_category": (1, _SIZE),
    "d_attribute": (1, _SIZE),
    "text_buckets": (1, 1 << 24),
    "d_text": (1, _SIZE),
    "d_feed": (1, _SIZE),
    "loss_chunk": (1, 1 << 20),
    "dropout": (0.0, 1.0),
    "input_dropout": (0.0, 1.0),
    "category_loss_weight": (0.0, 1e6),
    "score_scale": (0.0, 1e6),
}


# The category-repeat bonuses are this many times their parameters: AdamW moves a parameter by about lr per
# step, and a bonus worth having (a few logits) would otherwise take thousands of steps to reach.
_REPEAT_GAIN = 10.0


def _replace(config: HierSRecConfig, **changes: Any) -> HierSRecConfig:
    return HierSRecConfig(**{**asdict(config), **changes})


@dataclass(frozen=True)
class ItemFeatures:
    """The item-side inputs of the model as tensors aligned to ``item_idx`` (stored in the state dict).

    Attributes:
        item_category: (V,) int64 category of each item (0 = PAD).
        attributes: (V, K) int64 codes of the extra categorical attributes (0 = missing).
        numeric: (V, 2M) float32 standardised signed-log values and missing-value indicators.
        text_offsets: (V + 1,) int64 CSR offsets of the hashed token bags (empty without hashed text).
        text_tokens: (n_tokens,) int64 hashed token ids.
        text_embeddings: (V, 384) float32 frozen sentence embeddings ((V, 0) without them).
    """

    item_category: torch.Tensor
    attributes: torch.Tensor
    numeric: torch.Tensor
    text_offsets: torch.Tensor
    text_tokens: torch.Tensor
    text_embeddings: torch.Tensor

    @classmethod
    def from_catalog(
        cls, catalog: ItemCatalog, config: HierSRecConfig, text_cache_dir: str | Path | None = None
    ) -> ItemFeatures:
        """Build the features that ``config`` asks for from the catalogue (validating column names).

        Raises:
            ConfigError: a requested column or the text is missing from the catalogue.
        """
        n_rows = catalog.item_category.size
        for name in config.categorical_features:
            if name not in catalog.categorical:
                raise ConfigError(f"model.categorical_features: no column {name!r}; have {sorted(catalog.categorical)}")
        for name in config.numeric_features:
            if name not in catalog.numeric:
                raise ConfigError(f"model.numeric_features: no column {name!r}; have {sorted(catalog.numeric)}")
        if config.text_features != "none" and catalog.text is None:
            raise ConfigError(f"model.text_features = {config.text_features!r} but the catalogue has no item text")
        attributes = np.stack([catalog.categorical[n] for n in config.categorical_features] or [np.zeros(0)], axis=1)
        numeric = [_standardise(catalog.numeric[name]) for name in config.numeric_features]
        offsets, tokens = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        embeddings = np.zeros((n_rows, 0), dtype=np.float32)
        if config.text_features == "hashed":
            offsets, tokens = hashed_token_bags(catalog.text, config.text_buckets)
        elif config.text_features == "minilm":
            embeddings = sentence_embeddings(catalog.text, text_cache_dir)
        return cls(
            item_category=torch.from_numpy(catalog.item_category.astype(np.int64)),
            attributes=torch.from_numpy(attributes[:, : len(config.categorical_features)].astype(np.int64)),
            numeric=torch.from_numpy(np.concatenate(numeric, axis=1) if numeric else np.zeros((n_rows, 0), np.float32)),
            text_offsets=torch.from_numpy(offsets),
            text_tokens=torch.from_numpy(tokens),
            text_embeddings=torch.from_numpy(embeddings),
        )

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "features_") -> ItemFeatures:
        """The features stored in a `HierSRec` state dict (no catalogue needed to rebuild a saved model)."""
        return cls(**{f.name: state_dict[prefix + f.name] for f in fields(cls)})


def _standardise(values: np.ndarray) -> np.ndarray:
    # Signed log tames heavy tails (prices); missing values become 0 with an indicator column.
    missing = np.isnan(values)
    logged = np.sign(values) * np.log1p(np.abs(np.nan_to_num(values)))
    present = logged[~missing]
    mean, std = (present.mean(), present.std() + 1e-6) if present.size else (0.0, 1.0)
    return np.stack([np.where(missing, 0.0, (logged - mean) / std), missing], axis=1).astype(np.float32)


class ItemEncoder(nn.Module):
    """``Proj(concat(E_id, E_cat, E_attr..., W_num x_num, W_text text))`` for every item at once.

    With only the id part (no category, metadata or text) it is the plain id embedding, as in SASRec.
    """

    def __init__(self, config: HierSRecConfig, features: ItemFeatures, category_table: nn.Embedding | None) -> None:
        super().__init__()
        self.ids = nn.Embedding(config.n_items, config.d_model, padding_idx=0)
        self.category_table = category_table if config.use_category_input else None
        cardinalities = [int(column.max()) + 1 for column in features.attributes.T]
        self.attributes = nn.ModuleList(nn.Embedding(n, config.d_attribute, padding_idx=0) for n in cardinalities)
        self.numeric = nn.Linear(features.numeric.shape[1], config.d_attribute) if features.numeric.shape[1] else None
        self.text_bag = None
        self.text_proj = None
        if config.text_features == "hashed":
            self.text_bag = nn.EmbeddingBag(config.text_buckets, config.d_text, mode="mean")
        elif config.text_features == "minilm":
            self.text_proj = nn.Linear(SENTENCE_EMBEDDING_DIM, config.d_text)
        width = config.d_model + config.d_attribute * (len(self.attributes) + (self.numeric is not None))
        width += config.d_category if self.category_table is not None else 0
        width += config.d_text if config.text_features != "none" else 0
        self.proj = nn.Linear(width, config.d_model) if width > config.d_model else None

    def forward(self, buffers: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(V, D) representation of every item; ``buffers`` are the model's feature tensors."""
        parts = [self.ids.weight]
        if self.category_table is not None:
            parts.append(self.category_table(buffers["item_category"]))
        parts.extend(table(buffers["attributes"][:, k]) for k, table in enumerate(self.attributes))
        if self.numeric is not None:
            parts.append(self.numeric(buffers["numeric"]))
        if self.text_bag is not None:
            parts.append(self.text_bag(buffers["text_tokens"], buffers["text_offsets"][:-1]))
        if self.text_proj is not None:
            parts.append(self.text_proj(buffers["text_embeddings"]))
        if self.proj is None:
            return parts[0]
        return self.proj(torch.cat(parts, dim=1))


@dataclass
class HierSRecOutput:
    """Training output: the loss terms and the per-target predictions they came from.

    Attributes:
        loss: L_item + lambda L_cat (mean over targets).
        item_loss: next-item cross-entropy (for "factorised": of the factorised distribution).
        category_loss: next-category cross-entropy.
        item_query: (N, D') queries at the N target positions.
        category_logits: (N, C) category logits at the target positions.
        target_items: (N,) the next items.
    """

    loss: torch.Tensor
    item_loss: torch.Tensor
    category_loss: torch.Tensor
    item_query: torch.Tensor
    category_logits: torch.Tensor
    target_items: torch.Tensor


class HierSRec(nn.Module):
    """Hierarchical multi-task Transformer for next-item prediction (arXiv 2309.06533).

    Registered as ``"hiersrec"``: built from its config and the catalogue (`from_config`), trained by the
    training loop (``forward`` returns the loss), saved as its config and state dict (`from_state_dict`).

    Example:
        >>> config = HierSRecConfig(d_model=16, n_heads=2).with_catalog(catalog)  # doctest: +SKIP
        >>> model = HierSRec(config, ItemFeatures.from_catalog(catalog, config))  # doctest: +SKIP
        >>> scores = model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "hiersrec"
    config_class: ClassVar[type] = HierSRecConfig
    item_loss: ItemLoss = ItemLoss()  # the training loop sets the run's (`hiersrec.train.loop`)

    def __init__(self, config: HierSRecConfig, features: ItemFeatures) -> None:
        super().__init__()
        if config.n_items < 2 or config.n_categories < 2:
            raise ConfigError("HierSRecConfig needs n_items and n_categories from the data: use config.with_catalog()")
        if features.item_category.shape != (config.n_items,):
            raise ConfigError(f"features cover {features.item_category.shape[0]} items, config has {config.n_items}")
        self.config = config
        for field in fields(ItemFeatures):
            self.register_buffer(f"features_{field.name}", getattr(features, field.name))
        uses_table = config.use_category_input or config.category_feed == "expected"
        self.category_table = (
            nn.Embedding(config.n_categories, config.d_category, padding_idx=0) if uses_table else None
        )
        self.item_encoder = ItemEncoder(config, features, self.category_table)
        separate = config.output_embedding == "separate"
        self.output_encoder = ItemEncoder(config, features, self.category_table) if separate else None
        self.positions = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(
            CausalBlock(config.d_model, config.n_heads, config.d_ff) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model)
        self.category_head = nn.Linear(config.d_model, config.n_categories)
        self.category_feed = CategoryFeed(
            config.category_feed, config.n_categories, config.d_model, config.d_ff, config.d_feed, config.d_category
        )
        self.item_bias = nn.Parameter(torch.zeros(config.n_items)) if config.item_bias else None
        self.readout_logit = nn.Linear(config.d_model, 1) if config.readout != "state" else None
        self.readout_gate = nn.Linear(config.d_model, 1) if config.readout == "gated" else None
        # (last click's category, any category of the session) bonuses, in units of _REPEAT_GAIN (see there).
        self.category_repeat = nn.Parameter(torch.zeros(2)) if config.category_repeat else None
        self.apply(init_weights)
        for encoder in (self.item_encoder, self.output_encoder):
            if encoder is not None and encoder.proj is not None:
                # Keep projected items at the embeddings' scale (std 0.02), level with the positions: with the
                # default std 0.02 the projection would shrink them ~5x and positions would drown them out.
                nn.init.normal_(encoder.proj.weight, std=encoder.proj.in_features**-0.5)

    @classmethod
    def from_config(
        cls, config: HierSRecConfig, catalog: ItemCatalog, text_cache_dir: str | Path | None = None
    ) -> HierSRec:
        """A new model for ``catalog`` (``n_items`` / ``n_categories`` are set from it)."""
        config = config.with_catalog(catalog)
        return cls(config, ItemFeatures.from_catalog(catalog, config, text_cache_dir))

    @classmethod
    def from_state_dict(cls, config: HierSRecConfig, state: Mapping[str, torch.Tensor]) -> HierSRec:
        """The saved model: its item features are buffers of the state dict, so no catalogue is needed.

        Raises:
            ConfigError: the state dict does not fit ``config`` (missing or unexpected keys, other shapes).
        """
        try:
            features = ItemFeatures.from_state_dict(state)
        except KeyError as error:
            raise ConfigError(f"the weights lack the item features ({error.args[0]})") from error
        return load_weights(lambda: cls(config, features), state)

    # -- encoder ---------------------------------------------------------------------------------------------

    def _buffers_by_name(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f"features_{f.name}") for f in fields(ItemFeatures)}

    def _cached(self, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        # Inference recomputes the (V, D) item tables on every call otherwise (tens of ms at 43k items, the
        # bulk of a served request). They are cached only without autograd and outside training, keyed by the
        # parameters' identities and in-place versions, so optimizer steps, load_state_dict and .to() all
        # invalidate them.
        if self.training or torch.is_grad_enabled():
            return compute()
        key = tuple((id(p), p._version, p.device, p.dtype) for p in self.parameters())
        cache = self.__dict__.setdefault("_table_cache", {})
        if cache.get(name, (None,))[0] != key:
            cache[name] = (key, compute())
        return cache[name][1]

    def _encode(
        self, items: torch.Tensor, lengths: torch.Tensor, dropout: float, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states and item-side vectors, each (B, T, D), of LEFT-padded ``items`` (B, T), T <= max_len.

        Row b's outputs for its j-th real click (j = 0 is the oldest) are at ``[b, j]``; columns >= lengths[b]
        hold padding outputs that nothing reads. Because padding moves to the right, a causal mask alone
        keeps real clicks from seeing it, and position j is the same whatever the padding. The states feed
        the category head; the item-side vectors (``readout``) start the item query: the states themselves,
        or CORE's prefix-weighted sums of the input item representations (added to the states for "both",
        mixed with them by direction for "gated").
        With ``last_only`` (inference, no dropout), each row's outputs at its last real click, (B, D) each.
        """
        width = items.shape[1]
        aligned = align_left(items, lengths)  # real clicks first, padding after
        table = self._cached("input", lambda: self.item_encoder(self._buffers_by_name()))  # (V, D)
        embedded = F.embedding(aligned, table)  # (B, T, D)
        input_dropout = self.config.input_dropout if dropout else 0.0
        x = F.dropout(embedded + self.positions.weight[:width], input_dropout)
        if last_only and self.readout_logit is None:
            for block in self.blocks[:-1]:
                x = block(x, dropout)
            states = self.final_norm(self.blocks[-1].forward_at(x, lengths - 1))
            return states, states
        for block in self.blocks:
            x = block(x, dropout)
        states = self.final_norm(x)
        vectors = states
        if self.readout_logit is not None:
            logits = self.readout_logit(states).squeeze(2)
            mixed = prefix_weighted_sums(logits, F.dropout(embedded, input_dropout))
            vectors = self._mix_readout(states, mixed)
        if last_only:
            rows = torch.arange(items.shape[0], device=items.device)
            return states[rows, lengths - 1], vectors[rows, lengths - 1]
        return states, vectors

    def _mix_readout(self, states: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        """The item-side vectors (..., D) of the states and CORE's weighted item sums (..., D), per ``readout``."""
        if self.config.readout == "items":
            return mixed
        if self.readout_gate is None:  # "both"
            return states + mixed
        # Directions mixed, length the state's: the two parts differ in length by ~50x at initialisation.
        gate = torch.sigmoid(self.readout_gate(states))  # (..., 1)
        direction = gate * F.normalize(states, dim=-1) + (1.0 - gate) * F.normalize(mixed, dim=-1)
        return states.norm(dim=-1, keepdim=True) * direction

    def _session_categories(
        self, items: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What `category_repeat` reads of N cases, or None without it.

        Case n is the prefix of LEFT-padded ``items[rows[n]]`` that ends at its real click ``positions[n]``
        (0 = the oldest). Returns the (N, T) categories of each prefix (0 past its end) and the (N,) category
        of its last click.
        """
        if self.category_repeat is None:
            return None
        categories = self.features_item_category[align_left(items, lengths)[rows]]  # (N, T)
        columns = torch.arange(items.shape[1], device=items.device)
        last = categories.gather(1, positions[:, None]).squeeze(1)
        return categories.masked_fill(columns[None, :] > positions[:, None], 0), last

    def _heads(
        self,
        states: torch.Tensor,
        vectors: torch.Tensor,
        dropout: float,
        session_categories: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ItemQuery:
        """The `ItemQuery` of (N, D) states and item-side vectors (`_encode`).

        ``session_categories`` (`_session_categories`) is required with ``category_repeat``.
        Returns (N, D') item queries and (N, C) category logits (PAD = -inf).
        """
        category_logits = self.category_head(states).float()
        if self.category_repeat is not None:
            prefix, last = session_categories
            bonus = _REPEAT_GAIN * self.category_repeat.float()
            seen = torch.zeros_like(category_logits).scatter_(1, prefix, 1.0)
            category_logits = category_logits + bonus[1] * seen
            category_logits = category_logits.scatter_add(1, last[:, None], bonus[0].expand(last.shape[0], 1))
        category_logits[:, 0] = float("-inf")
        table = None if self.category_table is None else self.category_table.weight
        query = self.category_feed.query(vectors, category_logits, dropout, table)
        if self.config.score_scale:
            query = F.normalize(query.float(), dim=1) * self.config.score_scale
        if self.item_bias is not None:
            query = torch.cat([query, torch.ones_like(query[:, :1])], dim=1)
        return ItemQuery(
            vectors=query,
            category_logits=category_logits,
            category_offsets=self.category_feed.category_offsets(category_logits),
            normalise_within_category=self.category_feed.normalises_within_category,
        )

    def item_output_embeddings(self) -> torch.Tensor:
        """(V, D') item output representations; row 0 is PAD (its scores are always masked)."""
        return self._cached("output", self._output_table)

    def _item_columns(self) -> torch.Tensor:
        # (D', V) contiguous: a serving-size product (B << V) reads this layout faster than the
        # transpose of the (V, D') table (benchmarks/results/serve_load-dgn-full-2026-11-29.md).
        return self._cached("columns", lambda: self.item_output_embeddings().detach().float().T.contiguous())

    def _output_table(self) -> torch.Tensor:
        if self.config.output_embedding == "ids":
            table = self.item_encoder.ids.weight
        else:
            table = (self.output_encoder or self.item_encoder)(self._buffers_by_name())
        if self.config.score_scale:
            table = F.normalize(table.float(), dim=1)
        if self.item_bias is not None:
            table = torch.cat([table, self.item_bias[:, None].to(table.dtype)], dim=1)
        return table

    # -- training ----------------------------------------------------------------------------------------------

    def forward(self, batch: SessionBatch, target_mask: torch.Tensor | None = None) -> HierSRecOutput:
        """Loss at every position of whole sessions in one pass.

        Each row of ``batch.items`` (LEFT-padded, at most ``max_len + 1`` clicks) is one session: every
        click after the first is the target of the clicks before it, exactly the (prefix, next item) cases
        of prefix augmentation (`encode_positions`).

        Args:
            batch: whole sessions (targets are read from the rows themselves).
            target_mask: (B, T) bool in ``batch.items``'s layout, True where a click counts as a target
                (default: every real click but the first of its row).

        Returns:
            `HierSRecOutput` with the mean losses over the N targets.
        """
        query, target_items = self.encode_positions(batch, target_mask)
        target_categories = self.features_item_category[target_items]
        category_loss = F.cross_entropy(query.category_logits, target_categories)
        item_loss = self._item_loss(query, target_items, target_categories, category_loss)
        loss = item_loss + self.config.category_loss_weight * category_loss
        return HierSRecOutput(loss, item_loss, category_loss, query.vectors, query.category_logits, target_items)

    def encode_positions(
        self, batch: SessionBatch, target_mask: torch.Tensor | None = None
    ) -> tuple[ItemQuery, torch.Tensor]:
        """Queries at every target position of whole sessions, and the (N,) target items, row by row.

        Dropout applies in training mode (this is the training forward pass without the loss).
        """
        cases = NextClickCases.of(batch, self.config.max_len, target_mask)
        dropout = self.config.dropout if self.training else 0.0
        states, vectors = self._encode(cases.inputs, cases.input_lengths, dropout)  # (B, T-1, D) each
        rows, positions = cases.selected.nonzero(as_tuple=True)  # row-major, as the boolean index below
        categories = self._session_categories(cases.inputs, cases.input_lengths, rows, positions)
        return self._heads(states[cases.selected], vectors[cases.selected], dropout, categories), cases.targets

    def _item_loss(self, query: ItemQuery, target_items, target_categories, category_loss) -> torch.Tensor:
        # The run's loss (`reference_item_loss` is the exact one written plainly).
        target_groups, group_bias = self.category_feed.loss_terms(query.category_logits, target_categories)
        # The output items are encoded in float32 even under bf16 autocast: the loss reads them in float32, and
        # their encoder's projection would otherwise round them to bf16 first.
        with torch.autocast(target_items.device.type, enabled=False):
            table = self.item_output_embeddings()
        total = self.item_loss(
            query.vectors, table, target_items, chunk_size=self.config.loss_chunk,
            item_groups=self.features_item_category, target_groups=target_groups, group_bias=group_bias,
        )  # fmt: skip
        item_loss = total / max(target_items.numel(), 1)
        # Factorised: -log P(i) = -log P(c(i)) - log P(i | c(i)).
        return item_loss + category_loss if self.category_feed.normalises_within_category else item_loss

    def reference_item_loss(self, query: ItemQuery, target_items: torch.Tensor) -> torch.Tensor:
        """The item loss as defined: mean ``-log softmax(score)[target]`` over the N targets, for every feed.

        ``score`` is the full-ranking score (`score_query`), so this is the cross-entropy of the distribution
        the model ranks by: for "factorised" the scores are already log-probabilities (``log P(c) + log P(i |
        c)``), and the softmax leaves them unchanged. It holds the (N, V) logits in memory; training uses the
        run's `ItemLoss` instead (`_item_loss`; by default equal up to float rounding).
        """
        table = self.item_output_embeddings().float().T  # (D', V)
        scores = item_query_scores(query, table, self.features_item_category)
        return F.cross_entropy(scores[:, 1:], target_items - 1)

    # -- inference ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        """The `ItemQuery` at the last real click of each LEFT-padded session.

        Sessions longer than ``max_len`` keep their most recent ``max_len`` clicks. Dropout is never applied
        here, whatever the module's mode: scoring is a pure function of (weights, session).

        Raises:
            DataError: a session has no click.
        """
        items, lengths = batch.items[:, -self.config.max_len :], batch.lengths.clamp(max=self.config.max_len)
        if (lengths < 1).any():
            raise DataError("cannot score an empty session: every row needs at least one known click")
        states, vectors = self._encode(items, lengths, dropout=0.0, last_only=True)  # (B, D) each
        rows = torch.arange(items.shape[0], device=items.device)
        query = self._heads(states, vectors, 0.0, self._session_categories(items, lengths, rows, lengths - 1))
        return ItemQuery(
            query.vectors.float(), query.category_logits, query.category_offsets, query.normalise_within_category
        )

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 next-item scores, column 0 (PAD) = -inf (`score_query` of `query`)."""
        return self.score_query(self.query(batch))

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) float32 scores of an `ItemQuery`, as the category feed defines them (see `category_feed`)."""
        return item_query_scores(query, self._item_columns(), self.features_item_category)

    @torch.no_grad()
    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        """(B, C) float32 next-category logits, column 0 (PAD) = -inf."""
        return self.query(batch).category_logits

    @property
    def predicts_categories(self) -> bool:
        """True when a loss trains the category head (its accuracy means something)."""
        return self.config.category_loss_weight > 0 or self.category_feed.normalises_within_category

    def candidate_support(self) -> str | None:
        """None: every category feed's scores rank whole-category candidates exactly (see `category_feed`)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **asdict(self.config)}
