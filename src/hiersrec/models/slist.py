"""SLIST: session-aware linear item similarity / transition (Choi, Kim, Lee, Shim, Lee; WWW 2021).

One dense item-item matrix ``B`` learned in closed form from two views of the training sessions:

* SLIS (similarity): the session-item matrix ``X``, one row per session, 1 for each distinct item; it is
  reconstructed from itself, ``X -> X_t`` (``X_t = X`` before normalising the inputs);
* SLIT (transition): one row per session prefix; the input ``S`` holds the prefix (``direction="part"``: every
  past click at distance ``d`` from the prefix's last one, weighted ``exp(-d / train_weight)``;
  ``direction="sr"``: the last click only), the target ``T`` the rest of the session (the click ``d`` steps
  after the next one weighted ``exp(-d / train_weight)``). Repeated clicks add up.

The input rows (``X`` and ``S``, not the targets) are normalised (``normalize``: ``l1`` or ``l2``), every row is
weighted by its session's recency ``w = exp(-age / session_weight)`` (days from the latest training click to the
session's last one), and

``B = argmin alpha ||W^1/2 (X_t - X B)||^2 + (1 - alpha) ||W^1/2 (T - S B)||^2 + reg ||B||^2``
``  = P (alpha X'W X_t + (1 - alpha) S'W T)``, ``P = (alpha X'W X + (1 - alpha) S'W S + reg I)^-1``.

Pure SLIS (``alpha = 1``) keeps the paper's relaxed diagonal constraint ``diag(B) <= epsilon``: column ``j``
becomes ``B_j - P_j (B_jj - epsilon) / P_jj`` where ``B_jj`` exceeds the bound (``epsilon = 0``: a zero
diagonal, as in EASE); the combined model is unconstrained, as in the authors' code. A prefix of ``L`` clicks
scores ``sum_p exp(-(L - p) / predict_weight) B[item_p]`` (``p = L``: the last click).

Defaults: the authors' tuned diginetica values (``conf/save_slist/5fold_digi_slist.yml`` in jin530/SLIST:
``alpha=0.8, reg=10, direction="sr", train_weight=1, predict_weight=2, session_weight=256``) and their code's
``normalize="l1", epsilon=10`` (``algorithms/slist/slist.py``). ``SEARCH_SPACE`` is ours: powers of two and
decades around the values in the authors' configs (``alpha`` 0.2-0.8, ``reg`` 10, ``train_weight`` 0.25-1,
``predict_weight`` 1-4, ``session_weight`` 4-256 days).

``B`` is dense over the items that occur in training (m of them; float32, m^2 * 4 bytes); fitting holds it and
``P`` (inverted in place by Cholesky, with PyTorch's LAPACK). ``max_items`` refuses larger fits with the memory
they need, before any allocation.

Deviations from the authors' code:

* without training timestamps (the SR-GNN files have none) the session weight is left out and
  ``session_weight`` has no effect;
* an item never clicked in training scores 0 and adds nothing to a prefix (the closed form with its all-zero
  row and column gives exactly that); the authors' model knows training items only;
* scores are not divided by their maximum (the same ranking when the maximum is positive; theirs reverses it
  when the maximum is negative and is NaN when it is 0);
* their ``direction="all"`` (every click of the session as input and target, weighted by the distance to the
  prefix's end; not in the paper) is not offered; a weight of None switches its decay off (theirs: -1);
* ``reg`` must be > 0; ``P`` comes from a float32 Cholesky inverse (theirs: ``np.linalg.inv``), and the two
  objectives' products are summed with weights ``alpha`` and ``1 - alpha`` instead of stacking matrices scaled
  by their square roots (the same matrices).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError, DataError
from hiersrec.models._hyperparams import check_choice, check_non_negative, check_positive, check_positive_int
from hiersrec.models.base import FittedModel, check_is_fitted, mask_padding

DIRECTIONS = ("part", "sr")
"""SLIT's input: the whole prefix (``part``) or its last click (``sr``)."""

NORMALIZATIONS = ("l1", "l2", "none")
"""How each input row (a session or a prefix) is scaled before fitting."""

SECONDS_PER_DAY = 86_400
BYTES_PER_WEIGHT = 4  # float32
BLOCK_ROWS = 1024  # rows of a dense matrix processed at once (bounds the temporaries)


class SLIST(FittedModel):
    """A dense item-item matrix learned in closed form from whole sessions (SLIS) and their prefixes (SLIT).

    Args:
        alpha: weight of SLIS (item similarity over whole sessions) against SLIT (transitions from prefixes);
            1 = SLIS only, 0 = SLIT only.
        reg: L2 penalty ``lambda`` on the weights (> 0).
        direction: SLIT's input, one of `DIRECTIONS`.
        train_weight: decay of SLIT's clicks with their distance in the session (clicks; None: off).
        predict_weight: decay of a prefix's clicks with their distance from its last one (clicks; None: off).
        session_weight: decay of training sessions with their age (days; None: off; needs training timestamps).
        normalize: scaling of the input rows, one of `NORMALIZATIONS`.
        epsilon: upper bound on the diagonal of pure SLIS (``alpha = 1``; None: unbounded).
        max_items: most training items a fit accepts (the dense weights take ``max_items^2 * 4`` bytes, twice
            that while fitting); raise it on a machine with the memory.
    """

    name: ClassVar[str] = "slist"
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "alpha": (0.2, 0.4, 0.6, 0.8, 1.0),
        "reg": (1.0, 10.0, 100.0),
        "direction": DIRECTIONS,
        "train_weight": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        "predict_weight": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        "session_weight": (1.0, 4.0, 16.0, 64.0, 128.0, 256.0),
        "normalize": NORMALIZATIONS,
    }

    def __init__(
        self,
        alpha: float = 0.8,
        reg: float = 10.0,
        direction: str = "sr",
        train_weight: float | None = 1.0,
        predict_weight: float | None = 2.0,
        session_weight: float | None = 256.0,
        normalize: str = "l1",
        epsilon: float | None = 10.0,
        max_items: int = 50_000,
    ) -> None:
        self.alpha = alpha
        self.reg = reg
        self.direction = direction
        self.train_weight = train_weight
        self.predict_weight = predict_weight
        self.session_weight = session_weight
        self.normalize = normalize
        self.epsilon = epsilon
        self.max_items = max_items

    def fit(self, train: SessionData, catalog: ItemCatalog) -> SLIST:
        """Solve for the item-item weights over the items clicked in ``train``.

        Raises:
            ConfigError: a hyperparameter is out of range, or more than ``max_items`` items occur in training.
            DataError: ``train`` has no clicks.
        """
        self._check_params()
        items = np.unique(train.items)
        if items.size == 0:
            raise DataError("SLIST: the training sessions have no clicks")
        self._check_memory(items.size)
        column = np.searchsorted(items, train.items)  # each click's item as a column of the dense weights
        row_weight = session_recency(train, self.session_weight)
        views = []  # (share of the objective, (inputs, targets, session of each row))
        if self.alpha > 0:
            views.append((self.alpha, full_sessions(train, column, items.size)))
        if self.alpha < 1:
            views.append(
                (1 - self.alpha, partial_sessions(train, column, items.size, self.direction, self.train_weight))
            )
        gram = sp.csr_matrix((items.size, items.size), dtype=np.float64)
        cross = sp.csr_matrix((items.size, items.size), dtype=np.float64)
        for share, (inputs, targets, session) in views:
            inputs = _normalized(inputs, self.normalize)
            weighted = sp.diags(share * row_weight[session]) @ inputs  # W X (or W S): X'W X = X' (W X)
            gram = gram + inputs.T @ weighted
            cross = cross + weighted.T @ targets
        del views
        system = gram.astype(np.float32).toarray()
        del gram
        system.flat[:: items.size + 1] += np.float32(self.reg)
        inverse = invert_in_place(system)  # P
        weights = dense_times_sparse(inverse, cross.astype(np.float32).tocsr())  # P @ cross
        del cross
        if self.alpha == 1 and self.epsilon is not None:
            bound_diagonal(weights, inverse, self.epsilon)
        del inverse, system
        self.items_ = items
        self.n_columns_ = catalog.n_items + 1
        self.weights_ = weights
        return self

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 SLIST scores; items never clicked in training score 0; column 0 = -inf."""
        check_is_fitted(self, "weights_")
        items = batch.items.numpy()
        position = np.minimum(np.searchsorted(self.items_, items), self.items_.size - 1)
        known = (items > 0) & (self.items_[position] == items)
        rows, columns = np.nonzero(known)
        distance = items.shape[1] - 1 - columns  # left-padded: the last column is the latest click
        weight = _decay(distance, self.predict_weight).astype(np.float32)
        prefix = sp.csr_matrix((weight, (rows, position[rows, columns])), shape=(len(batch), self.items_.size))
        scores = np.zeros((len(batch), self.n_columns_), dtype=np.float32)
        # Every item clicked in training (items_ = 1..n_items): a slice instead of a scatter.
        scored = slice(1, None) if self.items_.size == self.n_columns_ - 1 else self.items_
        scores[:, scored] = prefix @ self.weights_
        return mask_padding(torch.from_numpy(scores))

    def _check_params(self) -> None:
        check_non_negative(self, "alpha", self.alpha)
        if self.alpha > 1:
            raise ConfigError(f"SLIST: alpha must be in [0, 1], got {self.alpha!r}")
        check_positive(self, "reg", self.reg)
        check_choice(self, "direction", self.direction, DIRECTIONS)
        for name in ("train_weight", "predict_weight", "session_weight"):
            check_positive(self, name, getattr(self, name), allow_none=True)
        check_choice(self, "normalize", self.normalize, NORMALIZATIONS)
        check_non_negative(self, "epsilon", self.epsilon, allow_none=True)
        check_positive_int(self, "max_items", self.max_items)

    def _check_memory(self, n_items: int) -> None:
        if n_items > self.max_items:
            gib = n_items**2 * BYTES_PER_WEIGHT / 2**30
            raise ConfigError(
                f"SLIST: {n_items:,} items occur in training, more than max_items={self.max_items:,}. Its dense "
                f"{n_items:,} x {n_items:,} float32 weights take {gib:.1f} GiB, and fitting holds two such "
                f"matrices (about {2 * gib:.1f} GiB). Raise max_items if the machine has that memory, or fit on "
                "fewer items (e.g. drop rare ones)."
            )


def full_sessions(
    train: SessionData, column: np.ndarray, n_items: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """SLIS's view: one row per session, 1 for each distinct item (inputs = targets before normalising).

    Returns:
        (inputs (S, m), targets (S, m), (S,) session of each row).
    """
    rows = np.repeat(np.arange(train.n_sessions), train.lengths)
    matrix = sp.csr_matrix((np.ones(rows.size), (rows, column)), shape=(train.n_sessions, n_items))
    matrix.data[:] = 1.0  # a repeated item counts once
    return matrix, matrix, np.arange(train.n_sessions)


def partial_sessions(
    train: SessionData, column: np.ndarray, n_items: int, direction: str, train_weight: float | None
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """SLIT's view: one row per prefix of at least one click followed by at least one more.

    Row ``(s, t)`` (``t`` = 0-based position of the prefix's last click in session ``s``) has the prefix as input
    (all of it with ``direction="part"``, its last click with ``"sr"``) and the clicks after it as target, each
    weighted by its distance: ``exp(-(t - p) / train_weight)`` for an input click at ``p``,
    ``exp(-(p - t - 1) / train_weight)`` for a target click at ``p``. Repeated items add up.

    Returns:
        (inputs (R, m), targets (R, m), (R,) session of each row).
    """
    starts, lengths = train.offsets[:-1], train.lengths
    session, last = _ragged(np.maximum(lengths - 1, 0))  # rows: (session, position of the prefix's last click)
    n_rows = session.size
    target_row, after = _ragged(lengths[session] - 1 - last)
    target_click = starts[session[target_row]] + last[target_row] + 1 + after
    targets = sp.csr_matrix((_decay(after, train_weight), (target_row, column[target_click])), shape=(n_rows, n_items))
    if direction == "part":
        input_row, position = _ragged(last + 1)
    else:
        input_row, position = np.arange(n_rows), last
    input_click = starts[session[input_row]] + position
    inputs = sp.csr_matrix(
        (_decay(last[input_row] - position, train_weight), (input_row, column[input_click])), shape=(n_rows, n_items)
    )
    return inputs, targets, session


def session_recency(train: SessionData, session_weight: float | None) -> np.ndarray:
    """(S,) recency weight ``exp(-age / session_weight)`` of each training session.

    The age is in days, from the session's last click to the latest click of ``train``. All weights are 1 when
    ``session_weight`` is None or ``train`` has no timestamps.
    """
    weights = np.ones(train.n_sessions)
    if session_weight is None or train.timestamps is None or train.n_clicks == 0:
        return weights
    nonempty = train.lengths > 0
    last_time = np.maximum.reduceat(train.timestamps, train.offsets[:-1][nonempty]).astype(np.float64)
    age_days = (last_time.max() - last_time) / SECONDS_PER_DAY
    weights[nonempty] = _decay(age_days, session_weight)
    return weights


def invert_in_place(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite (m, m) float32 C-ordered matrix, written over it.

    PyTorch's LAPACK (Cholesky factorisation, then the inverse from the factor) runs on the Fortran view of the
    same memory, the transpose, equal to the matrix, so neither step copies it; the inverse comes back with both
    triangles filled. SciPy's bundled OpenBLAS is not used: its ``spotrf`` crashed (segfault) on a 43,098-item
    diginetica fit, a matrix of 7.4 GB.

    Raises:
        ConfigError: the matrix is not numerically positive definite (``reg`` too small).
    """
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
    fortran = torch.from_numpy(matrix).mT
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(fortran, out=(fortran, info))
    if int(info) != 0:
        raise ConfigError(f"SLIST: the regularised Gram matrix is not positive definite (info={int(info)}); raise reg")
    inverse = torch.cholesky_inverse(fortran, out=fortran)
    assert inverse.data_ptr() == fortran.data_ptr(), "the inverse was not written in place"
    return matrix


def dense_times_sparse(dense: np.ndarray, sparse: sp.csr_matrix) -> np.ndarray:
    """``dense @ sparse`` as a C-ordered float32 array, a block of rows at a time (no full-size temporary)."""
    out = np.empty((dense.shape[0], sparse.shape[1]), dtype=np.float32)
    for start in range(0, dense.shape[0], BLOCK_ROWS):
        out[start : start + BLOCK_ROWS] = dense[start : start + BLOCK_ROWS] @ sparse
    return out


def bound_diagonal(weights: np.ndarray, inverse: np.ndarray, epsilon: float) -> None:
    """Bound the diagonal of ``weights`` (``B = P R``) by ``epsilon``, in place: SLIS's relaxed constraint.

    Each column ``j`` with ``B_jj > epsilon`` becomes ``B_j - P_j (B_jj - epsilon) / P_jj``, the minimiser of
    the objective under ``B_jj <= epsilon`` (the columns of the objective are independent).
    """
    excess = np.maximum(np.diagonal(weights) - epsilon, 0) / np.diagonal(inverse)
    if not excess.any():
        return
    for start in range(0, weights.shape[0], BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        weights[block] -= inverse[block] * excess


def _ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # For the counts.sum() entries of groups of those sizes: each entry's group and its rank within the group.
    group = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return group, np.arange(group.size) - first[group]


def _decay(distance: np.ndarray, scale: float | None) -> np.ndarray:
    # exp(-distance / scale) as float64; all 1 when the decay is off.
    distance = np.asarray(distance, dtype=np.float64)
    return np.ones_like(distance) if scale is None else np.exp(-distance / scale)


def _normalized(matrix: sp.csr_matrix, how: str) -> sp.csr_matrix:
    # Each row divided by its l1 or l2 norm (empty rows stay empty).
    if how == "none":
        return matrix
    lengths = np.diff(matrix.indptr)
    row = np.repeat(np.arange(matrix.shape[0]), lengths)
    values = np.abs(matrix.data) if how == "l1" else matrix.data**2
    norms = np.bincount(row, weights=values, minlength=matrix.shape[0])
    norms = norms if how == "l1" else np.sqrt(norms)
    scaled = matrix.copy()
    scaled.data = matrix.data / norms[row]
    return scaled
