"""SLIST: the closed form against a literal NumPy reference, prefix scoring, structure recovery, the memory guard.

The contract (shapes, padding, batch = alone, save -> load, refit) is checked for SLIST by test_contract.py and
test_baselines.py, which run over the registry.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError
from hiersrec.eval.protocol import evaluate
from hiersrec.models import make_baseline
from hiersrec.models.slist import SLIST, invert_in_place

N_ITEMS = 7
SESSIONS = [[1, 2, 3, 2], [2, 3], [4, 1, 3, 3, 5], [5], [2, 4, 1], [3, 5, 2, 1]]
"""Repeats, a one-click session; item 6 and 7 are never clicked."""

DAY = 86_400


def _catalog(n_items: int) -> ItemCatalog:
    return ItemCatalog(item_category=np.r_[0, np.ones(n_items, dtype=np.int64)], n_categories=1)


def _reference(sessions, n_items, *, alpha, reg, direction, train_weight, normalize, epsilon, session_weight=None,
               last_times=None) -> np.ndarray:  # fmt: skip
    """(V, V) B in float64 by the paper's definitions, row by row, over every item index (0 and the unseen too)."""
    decay = (lambda d: 1.0) if train_weight is None else (lambda d: math.exp(-d / train_weight))
    if session_weight is None or last_times is None:
        recency = [1.0] * len(sessions)
    else:
        recency = [math.exp(-(max(last_times) - t) / DAY / session_weight) for t in last_times]
    full_in, full_out, full_w, part_in, part_out, part_w = [], [], [], [], [], []
    for session, weight in zip(sessions, recency, strict=True):
        row = np.zeros(n_items + 1)
        row[session] = 1.0
        full_in.append(row), full_out.append(row.copy()), full_w.append(weight)
        for t in range(len(session) - 1):
            past, future = np.zeros(n_items + 1), np.zeros(n_items + 1)
            for p in range(t + 1) if direction == "part" else [t]:
                past[session[p]] += decay(t - p)
            for p in range(t + 1, len(session)):
                future[session[p]] += decay(p - t - 1)
            part_in.append(past), part_out.append(future), part_w.append(weight)

    def norm(rows):
        rows = np.array(rows)
        if normalize == "none":
            return rows
        norms = np.abs(rows).sum(1) if normalize == "l1" else np.sqrt((rows**2).sum(1))
        return rows / norms[:, None]

    # The authors' stacking: sqrt(alpha) and sqrt(1 - alpha) times each part, one diagonal of row weights.
    inputs = np.vstack([math.sqrt(alpha) * norm(full_in), math.sqrt(1 - alpha) * norm(part_in)])
    targets = np.vstack([math.sqrt(alpha) * np.array(full_out), math.sqrt(1 - alpha) * np.array(part_out)])
    weights = np.diag(full_w + part_w)
    identity = np.eye(n_items + 1)
    inverse = np.linalg.inv(inputs.T @ weights @ inputs + reg * identity)
    if alpha == 1 and epsilon is not None:  # the authors' mu: lambda, or what puts B_jj on the bound
        c = -inverse @ inputs.T @ weights @ (inputs - targets)
        unconstrained = 1 - np.diag(inverse) * reg + np.diag(c)
        mu = np.where(unconstrained >= epsilon, (1 - epsilon + np.diag(c)) / np.diag(inverse), reg)
        return identity - inverse @ np.diag(mu) + c
    return inverse @ inputs.T @ weights @ targets


def _dense(model: SLIST) -> np.ndarray:
    # The fitted weights over every item index, 0 where an item was never clicked.
    dense = np.zeros((model.n_columns_, model.n_columns_))
    dense[np.ix_(model.items_, model.items_)] = model.weights_
    return dense


CASES = {
    "slis, zero diagonal": dict(alpha=1.0, reg=2.0, direction="sr", train_weight=1.0, normalize="l1", epsilon=0.0),
    "slis, bounded diagonal": dict(alpha=1, reg=0.5, direction="sr", train_weight=1.0, normalize="none", epsilon=0.4),
    "slis, unbounded": dict(alpha=1.0, reg=3.0, direction="part", train_weight=1.0, normalize="l2", epsilon=None),
    "slit, prefixes": dict(alpha=0.0, reg=1.0, direction="part", train_weight=0.5, normalize="l1", epsilon=10.0),
    "slit, last click": dict(alpha=0, reg=4.0, direction="sr", train_weight=None, normalize="none", epsilon=10.0),
    "slist": dict(alpha=0.3, reg=10.0, direction="part", train_weight=2.0, normalize="l1", epsilon=10.0),
}


@pytest.mark.parametrize("case", CASES)
def test_weights_are_the_closed_form_of_the_paper(case):
    params = CASES[case]
    model = SLIST(**params).fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))
    assert model.weights_.dtype == np.float32 and model.weights_.shape == (5, 5)  # items 1..5 only
    expected = _reference(SESSIONS, N_ITEMS, **params)
    np.testing.assert_allclose(_dense(model), expected, rtol=1e-4, atol=1e-5)  # unseen rows and columns: 0
    if params["alpha"] == 1 and params["epsilon"] is not None:
        assert (np.diagonal(model.weights_) <= params["epsilon"] + 1e-5).all()


def test_zero_diagonal_slis_without_normalisation_is_ease():
    # alpha = 1, epsilon = 0: B = I - P diag(1 / diag(P)), P = (X'X + reg I)^-1 over the session-item matrix
    model = SLIST(alpha=1.0, reg=2.0, normalize="none", epsilon=0.0).fit(SessionData.from_lists(SESSIONS), _catalog(5))
    x = np.zeros((len(SESSIONS), 5))
    for row, session in enumerate(SESSIONS):
        x[row, np.array(session) - 1] = 1.0
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(5))
    np.testing.assert_allclose(model.weights_, np.eye(5) - p / np.diag(p), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(model.weights_), 0.0, atol=1e-6)


def test_sessions_are_weighted_by_their_age_in_days():
    train = SessionData.from_lists(SESSIONS)
    last_times = [20 * DAY, 23 * DAY, 21 * DAY, 30 * DAY, 22 * DAY, 24 * DAY]  # each session's last click
    stamps = np.concatenate([t - np.arange(len(s))[::-1] for s, t in zip(SESSIONS, last_times, strict=True)])
    timed = SessionData(offsets=train.offsets, items=train.items, timestamps=stamps)
    params = dict(alpha=0.5, reg=1.0, direction="part", train_weight=1.0, normalize="l1", epsilon=10.0)
    model = SLIST(**params, session_weight=2.0).fit(timed, _catalog(N_ITEMS))
    expected = _reference(SESSIONS, N_ITEMS, **params, session_weight=2.0, last_times=last_times)
    np.testing.assert_allclose(_dense(model), expected, rtol=1e-4, atol=1e-5)
    # without timestamps the session weight has no effect
    untimed = SLIST(**params, session_weight=2.0).fit(train, _catalog(N_ITEMS))
    unweighted = SLIST(**params, session_weight=None).fit(timed, _catalog(N_ITEMS))
    np.testing.assert_array_equal(untimed.weights_, unweighted.weights_)


def test_a_prefix_sums_the_rows_of_its_clicks_decayed_by_distance_from_the_last():
    model = SLIST(predict_weight=2.0).fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))
    items, lengths = left_pad([[3, 6, 1, 3]], max_len=10)  # item 6 was never clicked: it adds nothing
    scores = model.score(make_batch(items, lengths, _catalog(N_ITEMS))).numpy()[0]
    b = _dense(model)
    expected = math.exp(-3 / 2) * b[3] + math.exp(-1 / 2) * b[1] + b[3]
    np.testing.assert_allclose(scores[1:], expected[1:], rtol=1e-5, atol=1e-6)
    assert scores[0] == -np.inf and scores[6] == 0 and scores[7] == 0
    flat = SLIST(predict_weight=None).fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))
    scores = flat.score(make_batch(items, lengths, _catalog(N_ITEMS))).numpy()[0]
    np.testing.assert_allclose(scores[1:], (2 * _dense(flat)[3] + _dense(flat)[1])[1:], rtol=1e-5, atol=1e-6)


def _chain(n_sessions: int, n_items: int, rng: np.random.Generator) -> list[list[int]]:
    # walks along the ring 1 -> 2 -> ... -> n_items -> 1, from a random item, 2 to 6 clicks
    starts, lengths = rng.integers(0, n_items, n_sessions), rng.integers(2, 7, n_sessions)
    return [[1 + (s + k) % n_items for k in range(length)] for s, length in zip(starts, lengths, strict=True)]


@pytest.fixture(scope="module")
def chain_data() -> tuple[SessionData, SessionData, ItemCatalog]:
    rng = np.random.default_rng(0)
    return SessionData.from_lists(_chain(600, 30, rng)), SessionData.from_lists(_chain(100, 30, rng)), _catalog(30)


@pytest.mark.parametrize(
    "params", [{"alpha": 0.0}, {"alpha": 0.0, "direction": "part"}, {"alpha": 0.5, "normalize": "l2"}, {"alpha": 0.2}]
)
def test_the_transition_part_puts_the_successor_in_a_chain_first(params, chain_data):
    train, test, catalog = chain_data
    model = make_baseline("slist", **params).fit(train, catalog)
    assert evaluate(model, test, catalog, ks=(1,)).metrics["hr@1"] == 1.0


def test_item_similarity_alone_cannot_tell_the_successor_from_the_predecessor(chain_data):
    # SLIS only sees which items share a session, not their order: the predecessor competes with the
    # successor, and the top 3 hold the successor
    train, test, catalog = chain_data
    model = make_baseline("slist", alpha=1.0, epsilon=0.0).fit(train, catalog)
    metrics = evaluate(model, test, catalog, ks=(1, 3)).metrics
    assert metrics["hr@1"] < 0.6 and metrics["hr@3"] == 1.0


def test_more_items_than_max_items_is_refused_with_the_memory_it_would_take():
    model = SLIST(max_items=4)
    with pytest.raises(ConfigError, match=r"5 items occur in training, more than max_items=4.*GiB.*Raise max_items"):
        model.fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))
    assert not hasattr(model, "weights_")
    SLIST(max_items=5).fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))  # 5 is allowed


@pytest.mark.parametrize(
    "params",
    [{"alpha": 1.5}, {"alpha": -0.1}, {"reg": 0}, {"direction": "all"}, {"normalize": "max"}, {"train_weight": 0},
     {"predict_weight": -1}, {"session_weight": 0.0}, {"epsilon": -1.0}, {"max_items": 0}],
)  # fmt: skip
def test_bad_hyperparameters_fail_at_fit(params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        SLIST(**params).fit(SessionData.from_lists(SESSIONS), _catalog(N_ITEMS))


def test_the_inverse_is_computed_in_place():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1500, 1500))
    matrix = (a @ a.T / 1500 + np.eye(1500)).astype(np.float32)  # both triangles must come back filled
    expected = np.linalg.inv(matrix.astype(np.float64))
    inverse = invert_in_place(matrix)
    assert inverse is matrix
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_allclose(matrix, expected, atol=1e-4)
    with pytest.raises(ConfigError, match="not positive definite"):
        invert_in_place(-np.eye(3, dtype=np.float32))
