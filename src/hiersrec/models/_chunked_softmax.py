"""Full-softmax cross-entropy over a large item catalogue, in row chunks, without (N, V) logits in memory.

Scoring every training position against every item is the accurate choice for session recommendation
(no sampled negatives), but the (N, V) logits of one batch (~2,000 positions x 43,000 items) take 350 MB
in float32 and most of the time goes into writing and re-reading them. Here the logits of a few hundred
rows at a time are computed, turned into the loss and into their gradient right away, and the gradients
of the queries and of the item table are accumulated in the same pass (the idea of fused "linear + cross
entropy" kernels). Nothing of size (N, V) is stored for backward.
"""

from __future__ import annotations

import torch


def softmax_cross_entropy_sum(
    query: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    *,
    item_groups: torch.Tensor | None = None,
    target_groups: torch.Tensor | None = None,
    group_bias: torch.Tensor | None = None,
    chunk_size: int = 256,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sum over rows of ``-log softmax(logits)[target]`` with ``logits = query @ table.T``, padding excluded.

    Column 0 (the padding item) is never part of the softmax. Items may belong to groups (``item_groups``,
    e.g. their category), which allows two hierarchical variants:

    * ``target_groups``: row ``n``'s softmax runs only over the items of its target's group (the
      within-category term ``-log P(item | category)`` of a factorised model);
    * ``group_bias``: ``logits[n, i] += group_bias[n, item_groups[i]]`` (e.g. a weighted log-probability
      of the item's category), differentiable too.

    Args:
        query: (N, D) float32 row queries.
        table: (V, D) float32 item output embeddings; row 0 is padding.
        targets: (N,) int64 target item per row, >= 1.
        item_groups: (V,) int64 group of each item (needed by the two options below).
        target_groups: (N,) int64 group of each row's target, or None for the full softmax.
        group_bias: (N, G) float32 score added to every item of each group, or None.
        chunk_size: rows scored at once.
        compute_dtype: dtype of the matrix products and of the logits (``torch.bfloat16`` uses AMX / tensor
            cores; the softmax accumulates in float32 either way).

    Returns:
        A float32 scalar; differentiable with respect to ``query``, ``table`` and ``group_bias``.

    Example:
        >>> q, w, t = torch.randn(5, 3), torch.randn(11, 3), torch.tensor([1, 2, 3, 4, 5])
        >>> reference = torch.nn.functional.cross_entropy((q @ w.T)[:, 1:], t - 1, reduction="sum")
        >>> torch.allclose(softmax_cross_entropy_sum(q, w, t, chunk_size=2), reference)
        True
    """
    assert item_groups is not None or (target_groups is None and group_bias is None)
    return _ChunkedSoftmaxCrossEntropy.apply(
        query, table, targets, item_groups, target_groups, group_bias, chunk_size, compute_dtype
    )


class _ChunkedSoftmaxCrossEntropy(torch.autograd.Function):
    # Gradients are computed in forward (one pass over the logits) and only scaled in backward.

    @staticmethod
    def forward(ctx, query, table, targets, item_groups, target_groups, group_bias, chunk_size, compute_dtype):
        n_rows = query.shape[0]
        table_c = table.detach().to(compute_dtype)
        table_t = table_c.T.contiguous()  # (D, V): a contiguous right operand is several times faster
        grad_query = torch.empty_like(query, dtype=torch.float32)
        grad_table_t = torch.zeros_like(table_t, dtype=torch.float32)  # (D, V), accumulated over chunks
        grad_bias = None if group_bias is None else torch.empty_like(group_bias, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=query.device)
        # Two (chunk, V) buffers reused by every chunk: fresh large allocations cost page faults on CPU.
        shape = (min(chunk_size, n_rows), table.shape[0])
        logits_buffer = torch.empty(shape, dtype=compute_dtype, device=query.device)
        probs_buffer = torch.empty_like(logits_buffer)
        for start in range(0, n_rows, chunk_size):
            rows = slice(start, min(start + chunk_size, n_rows))
            n = rows.stop - start
            query_c = query[rows].detach().to(compute_dtype)
            logits = torch.mm(query_c, table_t, out=logits_buffer[:n])  # (n, V)
            if group_bias is not None:
                logits += group_bias[rows].detach().to(compute_dtype)[:, item_groups]
            logits[:, 0] = float("-inf")
            if target_groups is not None:
                outside = item_groups[None, :] != target_groups[rows, None]  # (n, V)
                logits.masked_fill_(outside, float("-inf"))
            target = targets[rows, None]
            # One fused row-wise kernel (max, exp, sum, divide) keeps each V-wide row in cache: far fewer
            # passes over memory than logsumexp + exp + divide.
            probs = torch.softmax(logits, dim=1, out=probs_buffer[:n])  # (n, V); padding column 0
            total -= probs.gather(1, target).float().clamp_min(torch.finfo(torch.float32).tiny).log().sum()
            probs[torch.arange(n, device=probs.device), target[:, 0]] -= 1.0  # now d loss / d logits
            grad_query[rows] = probs @ table_c
            grad_table_t += query_c.T.contiguous() @ probs  # a contiguous (D, n) left operand is faster
            if grad_bias is not None:
                grad_bias[rows] = torch.zeros_like(grad_bias[rows]).index_add_(1, item_groups, probs.float())
        ctx.save_for_backward(grad_query, grad_table_t.T, grad_bias)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_query, grad_table, grad_bias = ctx.saved_tensors
        grad_bias = None if grad_bias is None else grad_bias * grad_output
        return grad_query * grad_output, grad_table * grad_output, None, None, None, grad_bias, None, None
