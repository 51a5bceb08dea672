"""STAMP: short-term attention/memory priority (Liu et al., KDD 2018), trained at every position.

The model has no recurrence. For the prefix x_1..x_t of item embeddings it forms

* the session's general interest ``m_s = mean(x_1..x_t)``, and its current interest ``m_t = x_t``;
* attention weights ``a_i = w_0 . sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)`` over the prefix (unnormalised,
  as in the paper and the authors' code) and the attended memory ``m_a = sum_i a_i x_i + m_s``;
* two MLP cells ``h_s = tanh(W_s m_a + b_s)`` and ``h_t = tanh(W_t x_t + b_t)``;
* the trilinear score of item j: ``<h_s * h_t, x_j>`` against the same item embeddings, trained with the
  cross-entropy over all items.

Every quantity of position t reads the prefix up to t only (the mean is a running mean, the attention covers
i <= t), so the loss at every position of a whole session is the loss of each prefix scored alone (a test
checks it). Defaults: the authors' ``stamp_cikm`` configuration (github.com/uestcnlp/STAMP): 100-dimensional
embeddings, looked-up embeddings clipped to norm 1.5, embeddings initialised with std 0.002 and weights with
std 0.05, no dropout.

Deviations from the paper and the authors' code, each deliberate:

* ``m_a`` adds ``m_s`` to the attention sum as the authors' code does (the paper's equation for ``m_a`` has
  the attention sum only);
* the biases ``b_a``, ``b_s``, ``b_t`` of the paper's equations are kept (zero at the start); the authors' code
  has none;
* AdamW with warm-up and decay, the harness's gradient clipping and its weight decay on the matrices (the
  code: Adam at 0.003, gradient norm clipped at 110, batches of 512 prefixes of equal length);
* padding is row 0 of the item table (zero and never scored); sessions longer than ``max_len`` keep their
  most recent clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.errors import ConfigError
from hiersrec.models._session_vector import SessionVectorModel

# Shapes: B batch, T positions, N targets (read positions), D d_model, V items incl. PAD.


@dataclass(frozen=True)
class STAMPConfig:
    """Hyperparameters of `STAMP` (``n_items`` comes from the data); defaults: the authors' code."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    d_model: int = 100  # width of the item embeddings and of every layer (the code's edim)
    embedding_max_norm: float = 1.5  # looked-up item embeddings are scaled down to this norm (0 = never)
    embedding_std: float = 0.002  # std of the initial item embeddings (the code's emb_stddev)
    weight_std: float = 0.05  # std of the initial weight matrices (the code's stddev)
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_model": (1, 1 << 16), "loss_chunk": (1, 1 << 20)}
        bounds |= {"embedding_max_norm": (0.0, 1e6), "embedding_std": (0.0, 10.0), "weight_std": (0.0, 10.0)}
        check_bounds(self, "model", bounds)
        if self.embedding_std <= 0 or self.weight_std <= 0:
            raise ConfigError("model.embedding_std and model.weight_std must be > 0")


class STAMP(SessionVectorModel):
    """Short-term attention/memory priority model; registered as ``"stamp"``.

    Example:
        >>> model = STAMP.from_config(STAMPConfig(d_model=16), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "stamp"
    label: ClassVar[str] = "STAMP"
    config_class: ClassVar[type] = STAMPConfig
    # Chosen on diginetica validation against the shared 2e-3 (README, "Every model in one harness").
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-1}

    def __init__(self, config: STAMPConfig) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("STAMPConfig needs n_items from the data: use STAMP.from_config(config, catalog)")
        self.config = config
        width = config.d_model
        self.items = nn.Embedding(config.n_items, width, padding_idx=0)
        self.attention_item = nn.Linear(width, width, bias=False)  # W_1, on every x_i
        self.attention_last = nn.Linear(width, width, bias=False)  # W_2, on the last click x_t
        self.attention_mean = nn.Linear(width, width)  # W_3 on m_s, with the bias b_a
        self.attention_vector = nn.Linear(width, 1, bias=False)  # w_0
        self.general_cell = nn.Linear(width, width)  # W_s, b_s: h_s = tanh(W_s m_a + b_s)
        self.current_cell = nn.Linear(width, width)  # W_t, b_t: h_t = tanh(W_t x_t + b_t)
        with torch.no_grad():
            nn.init.normal_(self.items.weight, std=config.embedding_std)
            self.items.weight[0].zero_()
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=config.weight_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    def _embed(self, items: torch.Tensor) -> torch.Tensor:
        # The code's lookup with max_norm: vectors longer than the bound are scaled to it (the table is not).
        vectors = self.items(items)
        if self.config.embedding_max_norm > 0:
            norms = vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            vectors = vectors * (self.config.embedding_max_norm / norms).clamp(max=1.0)
        return vectors

    def _session_vectors(self, items: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors ``h_s * h_t`` of LEFT-ALIGNED ``items`` (B, T) read at (rows, positions).

        Everything at a read position comes from the clicks up to it, so a prefix read inside a longer row
        gets exactly the vector it gets alone.
        """
        embedded = self._embed(items)  # (B, T, D)
        memory = embedded[rows]  # (N, T, D)
        later = torch.arange(items.shape[1], device=items.device)[None, :] > positions[:, None]  # (N, T)
        memory = memory.masked_fill(later[:, :, None], 0.0)
        last = embedded[rows, positions]  # (N, D): x_t
        mean = memory.sum(dim=1) / (positions[:, None] + 1).to(memory.dtype)  # (N, D): m_s
        hidden = self.attention_item(memory) + (self.attention_last(last) + self.attention_mean(mean))[:, None]
        weights = self.attention_vector(torch.sigmoid(hidden)).squeeze(2).masked_fill(later, 0.0)  # (N, T)
        attended = (weights[:, :, None] * memory).sum(dim=1) + mean  # m_a
        return torch.tanh(self.general_cell(attended)) * torch.tanh(self.current_cell(last))
