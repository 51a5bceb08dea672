"""NARM: neural attentive session-based recommendation (Li et al., CIKM 2017), trained at every position.

A GRU reads the session's item embeddings. Its state at the current click is the global encoding ``c_g`` (the
whole sequential behaviour); the local encoding ``c_l`` is an attention-weighted sum of the states of the
session's clicks, each weighted by how well it matches the current state:
``a_tj = v . sigmoid(A_1 h_t + A_2 h_j)`` for every click j <= t, normalised by a softmax over j <= t (as the
authors' Theano code does). The session is ``c_t = [c_g; c_l]`` and an item scores ``e_i . (B c_t)``, the
bilinear decoder against the (shared) item embeddings, trained with the cross-entropy over all items.
Dropout 0.25 follows the embeddings and 0.5 precedes the decoder, as in the paper and its code.

Every position attends to its own prefix only (``j <= t``) and the GRU is causal, so the loss at every
position of a whole session is the loss of each prefix scored alone: training on whole-session rows equals
the paper's prefix-augmented training (a test checks it). Defaults: the authors' code (``train_gru``):
50-dimensional embeddings, 100 GRU units, its initialisation (normal weights with std sqrt(2 / rows),
orthogonal recurrent blocks, zero biases).

Deviations from the paper and the authors' code, each deliberate:

* ``torch.nn.GRU``: logistic gates, and the reset gate scales the recurrent product (the code: hard-sigmoid
  gates, and the reset gate scales the state before its matrix); the attention uses a logistic sigmoid too
  (the code: hard sigmoid);
* the paper writes the attention weights unnormalised (and RecBole's port keeps them so); here they are
  softmax-normalised over the prefix, as in the authors' code;
* ``c_t`` is ``[c_g; c_l]`` as in the paper (the code concatenates ``[c_l; c_g]``: the same model up to a
  permutation of B's columns);
* AdamW with warm-up and decay (and the harness's weight decay on the attention and decoder matrices) from
  the one training loop (the paper: Adam at 0.001, decayed by 0.1 every 3 epochs, batches of 512 prefixes);
* padding is row 0 of the item table (zero and never scored); sessions longer than ``max_len`` keep their
  most recent clicks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.errors import ConfigError
from hiersrec.models._session_vector import SessionVectorModel

# Shapes: B batch, T positions, N targets (read positions), D d_model (GRU width), E d_embedding, V items.


@dataclass(frozen=True)
class NARMConfig:
    """Hyperparameters of `NARM` (``n_items`` comes from the data); defaults: the authors' code."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    d_embedding: int = 50  # width of the item embeddings (the code's dim_proj)
    d_model: int = 100  # GRU units (the code's hidden_units), also the attention width
    n_layers: int = 1  # stacked GRU layers (the paper: 1)
    embedding_dropout: float = 0.25  # dropout on the item embeddings before the GRU
    decoder_dropout: float = 0.5  # dropout on [c_g; c_l] before the bilinear decoder
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_embedding": (1, 1 << 16)}
        bounds |= {"d_model": (1, 1 << 16), "n_layers": (1, 64), "loss_chunk": (1, 1 << 20)}
        check_bounds(self, "model", {**bounds, "embedding_dropout": (0.0, 1.0), "decoder_dropout": (0.0, 1.0)})
        for name in ("embedding_dropout", "decoder_dropout"):
            if not getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


def _normal_(weight: torch.Tensor, rows: int) -> None:
    # The authors' initialisation: normal with std sqrt(2 / rows), rows = the input side of the matrix.
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / rows))


class NARM(SessionVectorModel):
    """GRU encoder with attention over the prefix and a bilinear decoder; registered as ``"narm"``.

    Example:
        >>> model = NARM.from_config(NARMConfig(d_model=16), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "narm"
    label: ClassVar[str] = "NARM"
    config_class: ClassVar[type] = NARMConfig
    # Chosen on diginetica validation against the shared 2e-3 (README, "Every model in one harness").
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 3e-2}

    def __init__(self, config: NARMConfig) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("NARMConfig needs n_items from the data: use NARM.from_config(config, catalog)")
        self.config = config
        width = config.d_model
        self.items = nn.Embedding(config.n_items, config.d_embedding, padding_idx=0)
        self.gru = nn.GRU(config.d_embedding, width, config.n_layers, batch_first=True)
        self.attention_query = nn.Linear(width, width, bias=False)  # A_1, applied to the current state h_t
        self.attention_key = nn.Linear(width, width, bias=False)  # A_2, applied to every state h_j
        self.attention_vector = nn.Linear(width, 1, bias=False)  # v
        self.decoder = nn.Linear(2 * width, config.d_embedding, bias=False)  # B: item i scores e_i . (B c_t)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        config = self.config
        _normal_(self.items.weight, config.n_items)
        with torch.no_grad():
            self.items.weight[0].zero_()
        for name, weight in self.gru.named_parameters():
            if name.startswith("weight_ih"):
                _normal_(weight, weight.shape[1])
            elif name.startswith("weight_hh"):
                for block in weight.chunk(3, dim=0):
                    nn.init.orthogonal_(block)
            else:
                nn.init.zeros_(weight)
        _normal_(self.attention_query.weight, config.d_model)
        _normal_(self.attention_key.weight, config.d_model)
        _normal_(self.attention_vector.weight, 1)  # the code's (1, D) vector: std sqrt(2)
        _normal_(self.decoder.weight, config.d_embedding)

    def _session_vectors(self, items: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, E) decoded vectors ``B [c_g; c_l]`` of LEFT-ALIGNED ``items`` (B, T) read at (rows, positions).

        The attention of a read position covers the clicks up to it only, so a prefix read inside a longer
        row gets exactly the vector it gets alone.
        """
        config = self.config
        embedded = F.dropout(self.items(items), config.embedding_dropout, self.training)
        states, _ = self.gru(embedded)  # (B, T, D); padding after the real clicks never reaches them
        current = states[rows, positions]  # (N, D): c_g
        keys = self.attention_key(states)[rows]  # (N, T, D): A_2 h_j of each read row
        logits = self.attention_vector(torch.sigmoid(keys + self.attention_query(current)[:, None])).squeeze(2)
        later = torch.arange(items.shape[1], device=items.device)[None, :] > positions[:, None]  # (N, T)
        weights = logits.masked_fill(later, float("-inf")).softmax(dim=1)
        local = (weights[:, :, None] * states[rows]).sum(dim=1)  # (N, D): c_l
        session = F.dropout(torch.cat([current, local], dim=1), config.decoder_dropout, self.training)
        return self.decoder(session)
