"""The next-item training loss of every neural model, chosen per run (``train.loss``).

Every neural model trains its next-item task on (N, D) queries scored against a (V, D) item table whose row
0 is the padding item, never a class. Its ``forward`` calls an `ItemLoss`, which returns the SUM of the loss
over the N rows (the models divide by N) and owns the precision rule for all of them: under autocast the
products run in the autocast dtype and the softmax accumulates in float32 (autocast is switched off inside,
so it cannot pick the softmax's precision).

=============  ===================================================================  ===========
loss           what it computes                                                     logits held
=============  ===================================================================  ===========
``"full"``     the exact softmax cross-entropy over all items                       N x V
``"chunked"``  the same value in row chunks (`hiersrec.models._chunked_softmax`)    chunk x V
``"auto"``     "full" up to `FULL_LOGITS_LIMIT` logits per batch, else "chunked"    either
``"sampled"``  softmax over in-batch targets + S uniform negatives, logQ-corrected  N x (U + S)
``"gbce"``     gSASRec's generalised BCE over S uniform negatives                   N x (1 + S)
=============  ===================================================================  ===========

Sampled softmax (Jean et al., ACL 2015; the logQ correction of Yi et al., RecSys 2019): the candidate
columns are the U unique targets of the batch followed by S items drawn uniformly from 1..V-1 and shared by
all rows. Each logit ``q . e_j`` is lowered by ``log E_j``, the expected number of times item j is among the
candidates, ``E_j = N p_j + S / (V - 1)`` with ``p_j`` the item's share of the training targets (as
TensorFlow's ``sampled_softmax_loss`` subtracts the log expected count): without it, popular items, which
are in-batch negatives of many rows, would be pushed down far more than the full softmax pushes them. A
row's positive is its own target's column; any other column holding the same item (a uniform draw equal to
the target: an "accidental hit") is masked out.

Generalised BCE (Petrov & Macdonald, "gSASRec", RecSys 2023): per row ``beta * softplus(-s+) + sum
softplus(s-)`` over the row's positive score and the S shared uniform negatives (accidental hits add 0),
with ``beta = alpha (t (1 - 1/alpha) + 1/alpha)``, ``alpha = S / (|I| - 1)`` the negative sampling rate
over the |I| = V - 1 real items and ``t`` = ``train.gbce_t``: ``t = 0`` is plain BCE (``beta = 1``), ``t =
1`` gives ``beta = alpha``, the fully calibrated variant of the paper.

Neither sampled loss computes more than (N, candidates) scores, forward or backward: the table's gradient
reaches it through the gathered rows only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from hiersrec.errors import ConfigError
from hiersrec.models._chunked_softmax import softmax_cross_entropy_sum

# Shapes: N rows (training targets), D query width, V items incl. PAD, U unique targets, S uniform negatives.

ItemLossName = Literal["auto", "full", "chunked", "sampled", "gbce"]
ITEM_LOSSES: tuple[str, ...] = ("auto", "full", "chunked", "sampled", "gbce")
EXACT_LOSSES: tuple[str, ...] = ("auto", "full", "chunked")  # the softmax over every item, exactly
SAMPLED_LOSSES: tuple[str, ...] = ("sampled", "gbce")  # scores against a sample of the items

# "auto" materialises the logits up to 2**24 per batch: 64 MiB in float32, about 200 MiB with the log-softmax
# and the gradient autograd keeps beside them, small on any machine that trains, and few enough that the chunked
# kernel's per-chunk work buys nothing. Past that the chunked kernel holds a few hundred rows of logits at a
# time. At diginetica's size (2,048 targets x 43,000 items, 88 million logits) "auto" is the chunked kernel,
# the loss every committed result was trained with.
FULL_LOGITS_LIMIT = 1 << 24


class ItemLoss:
    """The next-item loss a neural model trains with: one of `ITEM_LOSSES` (see the module docstring).

    A model owns one (``model.item_loss``, the default ``ItemLoss()`` unless the training loop gave it the
    run's) and calls it in ``forward``.

    Args:
        kind: ``"auto"``, ``"full"``, ``"chunked"``, ``"sampled"`` or ``"gbce"``.
        negatives: S, the uniform negatives shared by the rows of a batch ("sampled", "gbce").
        gbce_t: the calibration ``t`` of "gbce", in [0, 1].
        item_counts: (V,) training clicks of each item (index 0: padding), the target shares of the logQ
            correction of "sampled"; an item never seen counts as 1, so every correction stays finite.
            None: every item has the same share, and the correction (then the same for every column) changes
            nothing.
        generator: where the negatives are drawn from (None: torch's default generator, which the training
            loop seeds per epoch and rank).

    Raises:
        ConfigError: unknown ``kind``, ``negatives`` < 1 or ``gbce_t`` outside [0, 1].

    Example:
        >>> q, w, t = torch.randn(5, 3), torch.randn(11, 3), torch.tensor([1, 2, 3, 4, 5])
        >>> exact = F.cross_entropy((q @ w.T)[:, 1:], t - 1, reduction="sum")
        >>> torch.allclose(ItemLoss("chunked")(q, w, t, chunk_size=2), exact)
        True
        >>> ItemLoss("sampled", negatives=4)(q, w, t).shape
        torch.Size([])
    """

    def __init__(
        self,
        kind: ItemLossName = "auto",
        *,
        negatives: int = 1024,
        gbce_t: float = 0.75,
        label_smoothing: float = 0.0,
        item_counts: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if kind not in ITEM_LOSSES:
            raise ConfigError(f"train.loss must be one of {', '.join(ITEM_LOSSES)}, not {kind!r}")
        if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
            raise ConfigError(f"train.negatives must be an int >= 1, got {negatives!r}")
        if not 0.0 <= gbce_t <= 1.0:
            raise ConfigError(f"train.gbce_t must be in [0, 1], got {gbce_t!r}")
        check_label_smoothing(kind, label_smoothing)
        self.kind = kind
        self.label_smoothing = label_smoothing
        self.negatives = negatives
        self.gbce_t = gbce_t
        self.generator = generator
        self._shares = None if item_counts is None else item_shares(torch.as_tensor(item_counts).cpu())
        self._shares_on: dict[torch.device, torch.Tensor] = {}  # the shares on each device asked for

    def __repr__(self) -> str:
        counts = "none" if self._shares is None else f"{self._shares.numel()} items"
        return (
            f"ItemLoss({self.kind!r}, negatives={self.negatives}, gbce_t={self.gbce_t}, "
            f"label_smoothing={self.label_smoothing}, item_counts={counts})"
        )

    def resolved(self, n_rows: int, n_items: int) -> str:
        """The loss computed for a batch of ``n_rows`` targets over ``n_items`` items: "auto" made concrete."""
        if self.kind != "auto":
            return self.kind
        return "full" if n_rows * n_items <= FULL_LOGITS_LIMIT else "chunked"

    def __call__(
        self,
        query: torch.Tensor,
        table: torch.Tensor,
        targets: torch.Tensor,
        *,
        chunk_size: int = 256,
        item_groups: torch.Tensor | None = None,
        target_groups: torch.Tensor | None = None,
        group_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``query @ table.T`` summed over the N rows (padding, column 0, is never a class).

        The group options are those of `softmax_cross_entropy_sum` (a softmax within the target's group, a
        per-group score offset); only the exact losses support them.

        Args:
            query: (N, D) row queries (any float dtype; read in float32).
            table: (V, D) item output vectors; row 0 is padding.
            targets: (N,) int64 target items, >= 1.
            chunk_size: rows per chunk of the chunked kernel.
            item_groups: (V,) int64 group of each item (needed by the two options below).
            target_groups: (N,) int64 group of each row's target: the softmax runs over that group only.
            group_bias: (N, G) score added to every item of each group (differentiable).

        Returns:
            A float32 scalar, differentiable with respect to ``query``, ``table`` and ``group_bias``.

        Raises:
            ConfigError: a sampled loss with ``target_groups`` or ``group_bias``, or item counts of another size.
        """
        grouped = target_groups is not None or group_bias is not None
        if grouped and self.label_smoothing:
            raise ConfigError(
                "train.label_smoothing spreads the target over every item, but this model's loss is a softmax within "
                "the target's category or with per-category offsets (the 'factorised' and 'prior' feeds); use "
                "label_smoothing = 0 or another category feed"
            )
        if grouped and self.kind in SAMPLED_LOSSES:
            raise ConfigError(
                f"train.loss = {self.kind!r} scores a sample of the items, but this loss needs the softmax over "
                "every item of a category or a per-category score offset; use train.loss = 'auto', 'full' or 'chunked'"
            )
        device_type = query.device.type
        autocast = torch.is_autocast_enabled(device_type)
        compute_dtype = torch.get_autocast_dtype(device_type) if autocast else torch.float32
        kind = self.resolved(targets.numel(), table.shape[0])
        with torch.autocast(device_type, enabled=False):
            query, table = query.float(), table.float()
            group_bias = None if group_bias is None else group_bias.float()
            if kind == "full":
                total = full_softmax_sum(
                    query, table, targets, item_groups=item_groups, target_groups=target_groups,
                    group_bias=group_bias, compute_dtype=compute_dtype,
                )  # fmt: skip
                return total + self._smoothing_sum(query, table, targets)
            if kind == "chunked":
                total = softmax_cross_entropy_sum(
                    query, table, targets, item_groups=item_groups, target_groups=target_groups,
                    group_bias=group_bias, chunk_size=chunk_size, compute_dtype=compute_dtype,
                )  # fmt: skip
                return total + self._smoothing_sum(query, table, targets)
            negatives = draw_negatives(table.shape[0], self.negatives, query.device, self.generator)
            if kind == "sampled":
                shares = self._device_shares(table.shape[0], query.device)
                return sampled_softmax_sum(query, table, targets, negatives, shares=shares, compute_dtype=compute_dtype)
            beta = gbce_beta(self.negatives, table.shape[0], self.gbce_t)
            return gbce_sum(query, table, targets, negatives, beta=beta, compute_dtype=compute_dtype)

    def _smoothing_sum(self, query: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | float:
        # Label smoothing eps over the V - 1 real items: per row (1 - eps) CE + eps mean_j(-log p_j) = CE + eps
        # (s_target - mean_j s_j), and mean_j s_j = q . mean_j v_j, so no (N, V) scores are needed beyond the
        # kernel's (the same value as F.cross_entropy's label_smoothing, a test checks it).
        if not self.label_smoothing:
            return 0.0
        margin = (query * table[targets]).sum() - query.sum(dim=0) @ table[1:].mean(dim=0)
        return self.label_smoothing * margin

    def _device_shares(self, n_items: int, device: torch.device) -> torch.Tensor | None:
        if self._shares is None:
            return None
        if self._shares.numel() != n_items:
            raise ConfigError(f"the item counts cover {self._shares.numel()} items, the model scores {n_items}")
        if device not in self._shares_on:
            self._shares_on[device] = self._shares.to(device)
        return self._shares_on[device]


def check_label_smoothing(kind: str, label_smoothing: float) -> None:
    """Refuse a ``train.label_smoothing`` outside [0, 1), or any smoothing with a sampled ``train.loss``.

    Raises:
        ConfigError: saying what to use instead.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if label_smoothing and kind in SAMPLED_LOSSES:
        raise ConfigError(
            f"train.label_smoothing spreads each target over every item, but train.loss = {kind!r} scores a "
            "sample of them; use train.loss = 'auto', 'full' or 'chunked', or train.label_smoothing = 0"
        )


def item_shares(item_counts: torch.Tensor) -> torch.Tensor:
    """(V,) float32 share of each item among the training targets, from its (V,) counts; padding's is 0.

    An item never seen counts as 1 (a pseudo-count), so its share, and the log of its expected count, stay
    finite; the shares of the real items sum to 1.
    """
    counts = item_counts.to(torch.float64).clamp_min(1.0)
    counts[0] = 0.0
    return (counts / counts.sum()).float()


def draw_negatives(
    n_items: int, count: int, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(count,) int64 items drawn uniformly with replacement from 1..n_items-1 (never padding), on ``device``."""
    source = device if generator is None else generator.device
    return torch.randint(1, n_items, (count,), generator=generator, device=source).to(device)


def full_softmax_sum(
    query: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    *,
    item_groups: torch.Tensor | None = None,
    target_groups: torch.Tensor | None = None,
    group_bias: torch.Tensor | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sum over rows of ``-log softmax(query @ table.T)[target]`` with the (N, V) logits in memory.

    The exact loss written plainly, with the options and the value of `softmax_cross_entropy_sum` (up to float
    rounding); autograd keeps the logits for backward.

    Args:
        query: (N, D) float32 row queries.
        table: (V, D) float32 item vectors; row 0 (padding) is never a class.
        targets: (N,) int64 target items, >= 1.
        item_groups: (V,) int64 group of each item (needed by the two options below).
        target_groups: (N,) int64 group of each row's target: the softmax runs over that group only.
        group_bias: (N, G) float32 score added to every item of each group.
        compute_dtype: dtype of the matrix product; the softmax runs in float32.

    Returns:
        A float32 scalar.
    """
    logits = _scores(query, table, compute_dtype)  # (N, V)
    if group_bias is not None:
        logits = logits + group_bias[:, item_groups]
    if target_groups is not None:
        logits = logits.masked_fill(item_groups[None, :] != target_groups[:, None], float("-inf"))
    return F.cross_entropy(logits[:, 1:], targets - 1, reduction="sum")


def sampled_softmax_sum(
    query: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    *,
    shares: torch.Tensor | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Summed sampled-softmax cross-entropy over the batch's unique targets and ``negatives``, logQ-corrected.

    Candidates: the U unique targets, then the S ``negatives``; logit ``q . e_j - log(N p_j + S / (V - 1))``;
    each row's positive is its target's column among the unique targets, any other column of the same item is
    masked out.

    Args:
        query: (N, D) float32 row queries.
        table: (V, D) float32 item vectors (row 0: padding, never a candidate).
        targets: (N,) int64 target items, >= 1.
        negatives: (S,) int64 uniform negatives in 1..V-1, shared by the rows.
        shares: (V,) float32 target share ``p_j`` of each item (`item_shares`); None: the same for every item.
        compute_dtype: dtype of the matrix product; the softmax runs in float32.

    Returns:
        A float32 scalar.
    """
    n_rows, n_items = targets.numel(), table.shape[0]
    unique, positive = torch.unique(targets, return_inverse=True)  # positive: each row's column among them
    candidates = torch.cat([unique, negatives])  # (U + S,)
    logits = _scores(query, table[candidates], compute_dtype)  # (N, U + S)
    uniform_rate = negatives.numel() / (n_items - 1)
    if shares is None:
        candidate_shares = logits.new_full((candidates.numel(),), 1.0 / (n_items - 1))
    else:
        candidate_shares = shares[candidates]
    logits = logits - torch.log(n_rows * candidate_shares + uniform_rate)
    hits = candidates[None, :] == targets[:, None]  # (N, U + S): the positive and any accidental hit
    hits[torch.arange(n_rows, device=hits.device), positive] = False
    logits.masked_fill_(hits, float("-inf"))  # in place: one (N, U + S) copy fewer
    return F.cross_entropy(logits, positive, reduction="sum")


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """The exponent ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` of gSASRec's loss for S uniform negatives.

    ``alpha = S / (|I| - 1)`` is the sampling rate over a row's |I| - 1 possible negatives (|I| = V - 1 real
    items, V counting padding). A rate is at most 1, so a catalogue with fewer possible negatives than draws
    gets alpha = 1, and beta = 1 (plain BCE) whatever ``t``. ``t = 0`` gives beta = 1, ``t = 1`` beta = alpha.

    Args:
        n_negatives: S, uniform negatives per batch.
        n_items: V, items including padding.
        t: the calibration parameter in [0, 1].
    """
    alpha = min(1.0, n_negatives / max(n_items - 2, 1))
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_sum(
    query: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    *,
    beta: float,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Summed generalised BCE: per row ``beta * softplus(-s+) + sum over negatives of softplus(s-)``.

    ``softplus(-s) = -log sigmoid(s)`` and ``softplus(s) = -log(1 - sigmoid(s))``, computed stably. A
    negative equal to the row's target (an accidental hit) adds 0 to that row.

    Args:
        query: (N, D) float32 row queries.
        table: (V, D) float32 item vectors.
        targets: (N,) int64 target items, >= 1.
        negatives: (S,) int64 uniform negatives in 1..V-1, shared by the rows.
        beta: the positive term's exponent (`gbce_beta`).
        compute_dtype: dtype of the products; the loss runs in float32.

    Returns:
        A float32 scalar.
    """
    positive = (query.to(compute_dtype) * table[targets].to(compute_dtype)).sum(dim=1).float()  # (N,)
    negative = _scores(query, table[negatives], compute_dtype)  # (N, S)
    hits = negatives[None, :] == targets[:, None]
    negative_terms = F.softplus(negative).masked_fill(hits, 0.0).sum(dim=1)
    return (beta * F.softplus(-positive) + negative_terms).sum()


def _scores(query: torch.Tensor, columns: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
    # (N, M) float32 scores of every row against the (M, D) columns, the product in compute_dtype.
    return (query.to(compute_dtype) @ columns.to(compute_dtype).T).float()
