"""Property test of the HTTP service (issue 9): any request body gets a 2xx or a 4xx, never a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hiersrec.serve.app import create_app  # noqa: E402
from inference_support import trained_recommender  # noqa: E402

ids = st.one_of(
    st.sampled_from(["i1", "i2", "i3", "i17", "c1", "nope", ""]),
    st.text(max_size=8),
    st.integers(min_value=-(10**20), max_value=10**20),
)
values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
sessions = st.lists(
    st.fixed_dictionaries({"items": st.lists(ids, max_size=6)}, optional={"exclude": st.lists(ids, max_size=3)}),
    min_size=0,
    max_size=4,
)
requests = st.fixed_dictionaries(
    {"sessions": sessions},
    optional={
        "k": st.one_of(st.integers(min_value=-5, max_value=2000), values),
        "exclude_seen": st.one_of(st.booleans(), values),
        "categories": st.one_of(st.none(), st.lists(ids, max_size=3)),
        "candidate_budget": st.one_of(
            st.none(),
            st.sampled_from(["4%", "100%", "category:1", "category:99999999999999999999", "0%", "4%:bogus", "x"]),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(),
        ),
    },
)


@pytest.fixture(scope="module")
def client(tiny_shop):
    with TestClient(create_app(trained_recommender(tiny_shop)), raise_server_exceptions=False) as test_client:
        yield test_client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(requests, values))
def test_any_request_is_answered_without_a_server_error(client, body):
    try:
        raw = json.dumps(body, allow_nan=True).encode()
    except (TypeError, ValueError):
        return
    response = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 413, 415, 422)
    if response.status_code != 200:
        assert response.json()["error"]  # the service's error shape, naming what is wrong
