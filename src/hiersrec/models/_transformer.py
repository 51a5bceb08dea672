"""The pieces the Transformer session models share: a causal pre-LN block, left-alignment, GPT-2 initialisation.

Generic infrastructure only; each model keeps its own item representation, heads and loss in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.data.batching import SessionBatch
from hiersrec.errors import DataError


class CausalBlock(nn.Module):
    """Pre-LN Transformer block with causal self-attention (nanoGPT's layout)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm_attention = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff_in = nn.Linear(d_model, d_ff)
        self.ff_out = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor, dropout: float) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); position t attends to positions <= t only.

        Dropout acts on the two residual branches only: dropping attention probabilities or the wide FFN
        hidden layer would need random masks several times larger, the slowest part of a CPU step.
        """
        batch, length, width = x.shape
        q, k, v = self._heads(x)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu_(1)
        attended = self._attend(q, k, v, causal)  # (B, H, T, D/H)
        x = x + F.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, width)), dropout)
        return self._feed_forward(x, dropout)

    def forward_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D): `forward`'s output at one position per row, without dropout.

        Inference reads one position per session; attending from that position alone (keys and values still
        cover positions <= it) and running the feed-forward layer there only costs a fraction of `forward` on
        long sessions, the tail of a served request's latency.
        """
        batch, length, width = x.shape
        rows = torch.arange(batch, device=x.device)
        q, k, v = self._heads(x)
        later = torch.arange(length, device=x.device)[None, :] > positions[:, None]  # (B, T)
        attended = self._attend(q[rows, :, positions].unsqueeze(2), k, v, later[:, None, None, :])  # (B, H, 1, D/H)
        return self._feed_forward(x[rows, positions] + self.out(attended.reshape(batch, width)), 0.0)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Queries, keys and values of every position, (B, H, T, D/H) each.
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).split(width, dim=2)
        return tuple(t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        # Plain attention: with T <= max_len, this beats the fused CPU kernels, whose backward is slow.
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, H, Tq, T)
        return scores.masked_fill(hidden, float("-inf")).softmax(dim=-1).to(v.dtype) @ v

    def _feed_forward(self, x: torch.Tensor, dropout: float) -> torch.Tensor:
        return x + F.dropout(self.ff_out(F.gelu(self.ff_in(self.norm_ff(x)))), dropout)


def align_left(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's last ``lengths[b]`` columns to the front (LEFT padding -> padding on the right)."""
    width = values.shape[1]
    gather = (torch.arange(width, device=values.device)[None, :] + (width - lengths)[:, None]) % width
    return values.gather(1, gather)


def prefix_weighted_sums(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, T, D) position t's softmax(logits[:, :t+1])-weighted sum of ``values[:, :t+1]`` (left-aligned rows).

    CORE's readout at every position at once: each position's weights cover its own prefix only, so a whole
    session's outputs equal those of each prefix encoded alone.
    """
    length = values.shape[1]
    later = torch.ones(length, length, dtype=torch.bool, device=values.device).triu_(1)  # (t, j): j > t
    weights = logits.float()[:, None, :].masked_fill(later, float("-inf")).softmax(dim=2)  # (B, T, T)
    return weights.to(values.dtype) @ values


def init_weights(module: nn.Module) -> None:
    """GPT-2 style initialisation, for ``model.apply``: small normal weights, zero biases, zero padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding | nn.EmbeddingBag):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "padding_idx", None) is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


@dataclass(frozen=True)
class NextClickCases:
    """The (prefix, next click) cases of whole LEFT-padded sessions, for a loss at every position.

    The state after click j predicts click j + 1: the model encodes ``inputs`` (every column but the last) and
    reads its states at ``selected``, in the left-aligned layout of `align_left`.

    Attributes:
        inputs: (B, T-1) item indices to encode, LEFT-padded.
        input_lengths: (B,) real clicks of each row of ``inputs``.
        selected: (B, T-1) bool, True at the states that predict a target.
        targets: (N,) the next items, row by row (N = ``selected.sum()``).
    """

    inputs: torch.Tensor
    input_lengths: torch.Tensor
    selected: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def of(cls, batch: SessionBatch, max_len: int, target_mask: torch.Tensor | None = None) -> NextClickCases:
        """Every real click but the first of each row is a target (and only where ``target_mask`` is True).

        Raises:
            DataError: a row holds more than ``max_len + 1`` clicks.
        """
        items, lengths = batch.items, batch.lengths
        if items.shape[1] > max_len + 1:
            raise DataError(f"training rows hold at most max_len + 1 = {max_len + 1} clicks")
        columns = torch.arange(items.shape[1], device=items.device)
        is_target = columns[None, :] > (items.shape[1] - lengths)[:, None]  # real and not the first click
        if target_mask is not None:
            is_target = is_target & target_mask
        selected = align_left(is_target, lengths)[:, 1:]
        targets = align_left(items, lengths)[:, 1:][selected]
        return cls(items[:, :-1], (lengths - 1).clamp(min=0), selected, targets)
