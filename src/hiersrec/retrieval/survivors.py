"""Exact top-k from one cheap pass: a per-row score threshold, and the few entries that can still be in the top k.

A row's top k over many score blocks is found without a top-k per block. Each block's columns are cut into
groups of `GROUP` and only the group maxima are kept; the ``k``-th largest group maximum of a row, ``tau``, is
the score of a real entry with at least ``k - 1`` others at or above it, so the row's ``k``-th best score is
``>= tau`` and every entry of its top k (ties at the cut included) scores ``>= tau``. One comparison per block
keeps those "survivors"; the final ranking runs over them only.

The same threshold makes a bf16 item matrix exact. bf16 scores (AMX / tensor-core matrix products) differ from
the fp32 ones by at most ``delta = BF16_SLACK * |q| * max_i |e_i|`` (`bf16_error_bound`). With ``tau`` computed on
bf16 scores, the true ``k``-th best is ``>= tau - delta``, so an entry of the true top k has a bf16 score
``>= tau - 2 * delta``: those survivors are re-scored in fp32 and ranked, and the answer equals the fp32 one
(up to fp32 rounding of the re-scored products).
"""

from __future__ import annotations

import torch

GROUP = 64  # columns per group maximum: a pass of maxima costs far less than a top-k over the whole row
# bf16 keeps 8 significant bits (unit roundoff u = 2^-8). Rounding the query and the item gives a product error
# <= (2u + u^2) |q_d e_d|; the matrix product accumulates in fp32 and rounds its result to bf16, another
# u |q . e| (and |q . e| <= sum_d |q_d e_d| <= |q| |e|). 2^-6 = 4u covers 3u + u^2 + the fp32 accumulation.
BF16_SLACK = 2.0**-6
NEG_INF = float("-inf")


def group_maxima(block: torch.Tensor) -> torch.Tensor:
    """(b, ceil(n / GROUP)) maxima of runs of `GROUP` columns of a (b, n) block (the last run may be short)."""
    n_rows, n_columns = block.shape
    full = n_columns - n_columns % GROUP
    maxima = block[:, :full].reshape(n_rows, full // GROUP, GROUP).amax(dim=2)
    if full < n_columns:
        maxima = torch.cat([maxima, block[:, full:].amax(dim=1, keepdim=True)], dim=1)
    return maxima


def kth_largest(rows: torch.Tensor, values: torch.Tensor, n_rows: int, k: int) -> torch.Tensor:
    """(n_rows,) ``k``-th largest of each row's ``values`` (flat ``rows`` / ``values`` pairs); -inf with fewer than k.

    Example:
        >>> kth_largest(torch.tensor([0, 0, 0, 1]), torch.tensor([3.0, 1.0, 2.0, 5.0]), 2, 2).tolist()
        [2.0, -inf]
    """
    row, order, column, width = _row_slots(rows, n_rows)
    table = torch.full((n_rows, width), NEG_INF)
    table[row, column] = values[order].float()
    return kth_largest_per_row(table, k)


def kth_largest_per_row(table: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) ``k``-th largest entry of each row of a (B, W) table; -inf when ``W < k``."""
    if table.shape[1] < k:
        return torch.full((table.shape[0],), NEG_INF)
    return torch.topk(table, k, dim=1).values[:, k - 1]


def bf16_error_bound(queries: torch.Tensor, max_item_norm: float) -> torch.Tensor:
    """(B,) bound on ``|bf16 score - fp32 score|`` of each (B, D) query against items of norm <= ``max_item_norm``."""
    return BF16_SLACK * torch.linalg.vector_norm(queries.float(), dim=1) * max_item_norm


def flat_rows(rows: list[torch.Tensor], ids: list[torch.Tensor], scores: list[torch.Tensor], n_rows: int):
    """Flat (row, id, score) entries -> (B, W) id and score buffers, padded with (0, -inf)."""
    if not rows:
        return torch.zeros((n_rows, 0), dtype=torch.int64), torch.zeros((n_rows, 0))
    row, order, column, width = _row_slots(torch.cat(rows), n_rows)
    id_buffer = torch.zeros((n_rows, width), dtype=torch.int64)
    score_buffer = torch.full((n_rows, width), NEG_INF)
    id_buffer[row, column] = torch.cat(ids)[order]
    score_buffer[row, column] = torch.cat(scores)[order].float()
    return id_buffer, score_buffer


def _row_slots(rows: torch.Tensor, n_rows: int):
    # Where flat entries go in a (n_rows, width) table, in their order within each row: the sorted rows, the
    # order that sorts them, each entry's column, and the width (the most entries of one row).
    row, order = torch.sort(rows, stable=True)
    counts = torch.bincount(row, minlength=n_rows)
    column = torch.arange(row.numel()) - (counts.cumsum(0) - counts)[row]
    return row, order, column, int(counts.max()) if row.numel() else 0
