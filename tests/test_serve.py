import json

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hiersrec.data.batching import prefix_batch  # noqa: E402
from hiersrec.errors import DataError  # noqa: E402
from hiersrec.recommend import Recommender  # noqa: E402
from hiersrec.serve.app import MAX_BODY_BYTES, create_app  # noqa: E402
from hiersrec.serve.schemas import MAX_K, MAX_RESULTS, MAX_SESSION_LENGTH, MAX_SESSIONS  # noqa: E402
from inference_support import RUN_MAX_LEN as MAX_LEN  # noqa: E402
from inference_support import trained_recommender, trained_run  # noqa: E402


class ScoreOnly:
    """A plain SessionRecommender (no category head)."""

    def score(self, batch):
        scores = torch.arange(38, dtype=torch.float32).expand(len(batch), -1).clone()
        scores[:, 0] = float("-inf")
        return scores


@pytest.fixture(scope="module")
def model(tiny_shop):
    return trained_recommender(tiny_shop).model


@pytest.fixture(scope="module")
def client(tiny_shop):
    with TestClient(create_app(trained_recommender(tiny_shop)), raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_run_directory_is_loaded_once_at_start_up(tiny_shop, monkeypatch):
    loads = []
    original = Recommender.from_artifact.__func__
    monkeypatch.setattr(
        Recommender, "from_artifact", classmethod(lambda cls, run: loads.append(run) or original(cls, run))
    )
    app = create_app(trained_run(tiny_shop))
    assert loads == []  # nothing is loaded when the app is created
    with TestClient(app) as run_client:
        for _ in range(3):
            assert run_client.post("/recommend", json={"sessions": [{"items": ["i1"]}], "k": 2}).status_code == 200
        info = run_client.get("/model").json()
        empty = run_client.post("/recommend", json={"sessions": [{"items": []}]}).json()["results"][0]
    assert loads == [trained_run(tiny_shop)]
    assert info["name"] == "hiersrec" and info["config"]["model"]["max_len"] == MAX_LEN
    assert "valid" in info["metrics"] and info["candidate_budgets"] is True
    # The run saved its training click counts: an empty session gets the labelled popularity fallback.
    assert empty["fallback"] == "popularity" and len(empty["items"]) == 20 and empty["unknown_items"] == []


def _post(client, body, content_type="application/json"):
    # application/json is answered by the app's ASGI fast path, other content types (a +json one here) by the
    # FastAPI route. Both must answer alike.
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/recommend", content=json.dumps(body).encode(), headers=headers)


def test_happy_path_one_and_many_sessions(client):
    one = _post(client, {"sessions": [{"items": ["i3", "i4"]}], "k": 5})
    assert one.status_code == 200
    [result] = one.json()["results"]
    assert len(result["items"]) == 5 and result["fallback"] is None and result["unknown_items"] == []
    assert {"item_id", "score", "category_id"} == set(result["items"][0])
    many = _post(client, {"sessions": [{"items": ["i3", "i4"]}, {"items": [5]}, {"items": []}], "k": 5})
    results = many.json()["results"]
    assert len(results) == 3 and results[0] == result
    assert results[2]["fallback"] == "popularity" and len(results[2]["items"]) == 5


def test_integer_ids_are_read_as_their_decimal_string(client, tiny_shop):
    # Raw ids of the synthetic shop are "i1".."i37": the integer 5 is unknown, "i5" is known.
    body = _post(client, {"sessions": [{"items": [5, "i5"]}], "k": 2}).json()
    assert body["results"][0]["unknown_items"] == ["5"]


def test_unknown_items_and_all_unknown_sessions(client):
    body = _post(client, {"sessions": [{"items": ["x", "i3", "y"]}, {"items": ["x", "y"]}], "k": 3}).json()
    partial, none_known = body["results"]
    assert partial["unknown_items"] == ["x", "y"] and partial["fallback"] is None
    assert none_known["unknown_items"] == ["x", "y"] and none_known["fallback"] == "popularity"


def test_k_beyond_the_catalogue_returns_what_exists(client):
    body = _post(client, {"sessions": [{"items": ["i1"], "exclude": ["i2"]}], "k": MAX_K, "exclude_seen": True})
    items = [entry["item_id"] for entry in body.json()["results"][0]["items"]]
    assert len(items) == 35 and "i1" not in items and "i2" not in items


def test_candidate_budget_and_category_filter(client):
    exact = _post(client, {"sessions": [{"items": ["i3"]}], "k": 10}).json()["results"][0]
    full_budget = _post(client, {"sessions": [{"items": ["i3"]}], "k": 10, "candidate_budget": "100%"})
    assert [e["item_id"] for e in full_budget.json()["results"][0]["items"]] == [e["item_id"] for e in exact["items"]]
    filtered = _post(client, {"sessions": [{"items": ["i3"]}], "k": 10, "categories": ["c2"]}).json()
    assert {e["category_id"] for e in filtered["results"][0]["items"]} == {"c2"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sessions": [{"items": ["i1", 2.5]}]}, "sessions[0].items[1]"),
        ({"sessions": [{"items": ["i1", None]}]}, "sessions[0].items[1]"),
        ({"sessions": [{"items": "i1"}]}, "sessions[0].items"),
        ({"sessions": [{"items": ["i1"]}], "k": "3"}, "k"),
        ({"sessions": [{"items": ["i1"]}], "k": True}, "k"),
        ({"sessions": [{"items": ["i1"]}], "k": 0}, "k"),
        ({"sessions": [{"items": ["i1"]}], "k": MAX_K + 1}, "k"),
        ({"sessions": []}, "sessions"),
        ({"sessions": [{"items": ["i1"]}] * (MAX_SESSIONS + 1)}, "sessions"),
        ({"sessions": [{"items": ["i1"] * (MAX_SESSION_LENGTH + 1)}]}, "sessions[0].items"),
        ({"sessions": [{"items": [""]}]}, "sessions[0].items[0]"),
        ({"sessions": [{"items": ["i1"]}], "exclude_seen": "yes"}, "exclude_seen"),
        ({"sessions": [{"items": ["i1"]}], "candidate_budget": "lots"}, "candidate_budget"),
        ({"sessions": [{"items": ["i1"]}], "candidate_budget": 2.0}, "candidate_budget"),
        # issue 9: a huge count was a 500 (OverflowError); sessions x k unbounded let a 9.7 KB request cost seconds
        ({"sessions": [{"items": ["i1"]}], "candidate_budget": "category:99999999999999999999"}, "candidate_budget"),
        ({"sessions": [{"items": ["i1"]}] * MAX_SESSIONS, "k": MAX_K}, "request body"),
        ({"sessions": [{"items": ["i1"]}], "categories": ["nope"]}, "categories"),
        ({"sessions": [{"items": ["i1"]}], "colour": "red"}, "colour"),
        ({"session": ["i1"]}, "sessions"),
        ([["i1"]], "request body"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json"])
def test_bad_input_is_a_422_naming_the_field(client, body, field, content_type):
    response = _post(client, body, content_type)
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{field}:") or f"; {field}:" in response.json()["error"]
    assert all(detail["loc"][0] == "body" for detail in response.json()["detail"])  # as FastAPI locates them


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.api+json"])
@pytest.mark.parametrize("raw", [b'{"sessions": [', b"not json", b""])
def test_malformed_json_is_a_422(client, raw, content_type):
    response = client.post("/recommend", content=raw, headers={"content-type": content_type})
    assert response.status_code == 422 and response.json()["error"].startswith("request body")


def test_the_fast_path_and_the_fastapi_route_give_the_same_answers(client):
    body = {"sessions": [{"items": ["i3", "x"], "exclude": ["i4"]}, {"items": []}], "k": 7, "exclude_seen": True}
    fast, routed = _post(client, body), _post(client, body, "application/vnd.api+json")
    assert routed.status_code == fast.status_code == 200 and routed.content == fast.content
    refused = {"sessions": [{"items": ["i3"]}], "categories": ["nope"]}
    assert _post(client, refused).json() == _post(client, refused, "application/vnd.api+json").json()
    assert _post(client, refused).json()["error"].startswith("categories: unknown category ids")
    # A body that is not declared JSON is refused with 415 (issue 9: it was a 422), naming what was sent.
    untyped = _post(client, body, None)
    assert untyped.status_code == 415 and "Content-Type must be application/json, got none" in untyped.json()["error"]
    plain = _post(client, body, "text/plain")
    assert plain.status_code == 415 and "got 'text/plain'" in plain.json()["error"]


def test_the_fast_path_takes_only_json_posts_to_recommend():
    import asyncio
    from types import SimpleNamespace

    from hiersrec.recommend import Recommendation
    from hiersrec.serve.app import _RecommendFastPath

    class Batcher:
        async def recommend(self, sessions, exclude, options):
            return [Recommendation(item_ids=("a",), scores=(1.5,), category_ids=("c",))] * len(sessions)

    app = SimpleNamespace(state=SimpleNamespace(batcher=Batcher()))
    passed_on, sent = [], []

    async def route(scope, receive, send):
        passed_on.append((scope["method"], scope["path"]))

    async def call(method, path, headers):
        body = json.dumps({"sessions": [{"items": ["i3"]}], "k": 2}).encode()
        scope = {"type": "http", "method": method, "path": path, "headers": headers, "app": app}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await _RecommendFastPath(route)(scope, receive, send)

    json_header = [(b"content-type", b"application/json")]
    asyncio.run(call("POST", "/recommend", json_header))
    assert passed_on == [] and sent[0]["status"] == 200
    [answer] = json.loads(sent[1]["body"])["results"]
    assert answer["items"] == [{"item_id": "a", "score": 1.5, "category_id": "c"}] and answer["fallback"] is None
    asyncio.run(call("POST", "/recommend", [(b"content-type", b"application/vnd.api+json")]))
    asyncio.run(call("POST", "/recommend", [(b"content-type", b"text/plain")]))  # answered 415 here
    assert sent[-2]["status"] == 415
    asyncio.run(call("GET", "/recommend", json_header))
    asyncio.run(call("POST", "/health", json_header))
    assert passed_on == [("POST", "/recommend"), ("GET", "/recommend"), ("POST", "/health")]


def test_oversized_body_is_a_413_declared_or_streamed(client):
    declared = client.post(
        "/recommend", content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}
    )
    streamed = client.post(
        "/recommend", content=(b" " * (1 << 20) for _ in range(5)), headers={"content-type": "application/json"}
    )
    for response in (declared, streamed):
        assert response.status_code == 413 and response.json()["error"].startswith("request body: larger than")


def test_unknown_paths_and_methods_answer_in_the_error_shape(client):
    assert client.get("/nothing").json()["error"] == "Not Found"
    not_allowed = client.get("/recommend")
    assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "POST"  # issue 9: Allow was missing


def test_candidate_budget_on_a_model_without_a_category_head_is_a_422(tiny_shop):
    app = create_app(Recommender(ScoreOnly(), tiny_shop.vocab, tiny_shop.catalog))
    with TestClient(app, raise_server_exceptions=False) as plain:
        ok = _post(plain, {"sessions": [{"items": ["i1"]}], "k": 2}).json()["results"][0]["items"]
        assert [e["item_id"] for e in ok] == ["i37", "i36"]
        refused = _post(plain, {"sessions": [{"items": ["i1"]}], "candidate_budget": "4%"})
        assert refused.status_code == 422 and refused.json()["error"].startswith("candidate_budget:")
        assert plain.get("/model").json()["candidate_budgets"] is False


def test_health_model_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "n_items": 37}
    info = client.get("/model").json()
    assert info["name"] == "hiersrec" and info["candidate_budgets"] is True and "version" in info
    schema = client.get("/openapi.json").json()
    assert {"/recommend", "/health", "/model"} <= set(schema["paths"])
    assert "RecommendRequest" in schema["components"]["schemas"]


def test_served_scores_equal_evaluated_scores(client, tiny_shop, model):
    targets = tiny_shop.test.target_positions()[:25]
    evaluated = model.score(prefix_batch(tiny_shop.test, tiny_shop.catalog, targets, MAX_LEN))
    starts = tiny_shop.test.session_starts()[targets]
    sessions = [
        {"items": tiny_shop.vocab.decode_items(tiny_shop.test.items[s:t])} for s, t in zip(starts, targets, strict=True)
    ]
    k = min(MAX_K, MAX_RESULTS // len(sessions))  # past the 37-item catalogue: every item
    results = _post(client, {"sessions": sessions, "k": k}).json()["results"]
    for row, (target, result) in enumerate(zip(targets, results, strict=True)):
        target_item = int(tiny_shop.test.items[target])
        served = {e["item_id"]: e["score"] for e in result["items"]}
        assert served[f"i{target_item}"] == pytest.approx(evaluated[row, target_item].item(), rel=1e-6)


class CountingRecommender:
    """Wraps a Recommender and records the size of every model call."""

    def __init__(self, recommender):
        self.recommender, self.calls = recommender, []

    def recommend_batch(self, sessions, **options):
        self.calls.append(len(sessions))
        return self.recommender.recommend_batch(sessions, **options)


@pytest.mark.parametrize("model_thread", [False, True])
def test_micro_batching_merges_concurrent_requests_without_changing_answers(tiny_shop, model, model_thread):
    import asyncio

    from hiersrec.serve.batching import MicroBatcher

    recommender = trained_recommender(tiny_shop)
    counting = CountingRecommender(recommender)
    sessions = [[f"i{1 + i}", f"i{2 + i}"] for i in range(12)]

    async def scenario():
        batcher = MicroBatcher(counting, max_sessions=5, model_thread=model_thread)
        batcher.start()
        same = [batcher.recommend([s], [[]], {"k": 4}) for s in sessions]
        other = batcher.recommend([sessions[0]], [[]], {"k": 2})
        failing = batcher.recommend([sessions[0]], [[]], {"k": 4, "categories": ["nope"]})
        results = await asyncio.gather(*same, other, failing, return_exceptions=True)
        await batcher.stop()
        return results

    *merged, other, failing = asyncio.run(scenario())
    for session, [result] in zip(sessions, merged, strict=True):
        alone = recommender.recommend(session, k=4)
        assert result.item_ids == alone.item_ids and result.scores == pytest.approx(alone.scores, rel=1e-5)
    assert len(other[0].item_ids) == 2 and isinstance(failing, DataError)
    # 12 requests with k=4 in chunks of at most 5 sessions, plus one k=2 call and the failing one.
    assert sorted(counting.calls) == [1, 1, 2, 5, 5]


def test_the_batcher_lets_the_loop_run_between_model_calls(tiny_shop):
    # issue 9: calls scored back to back in the loop's own thread starved /health for seconds. Two requests with
    # different options are two model calls; a task scheduled meanwhile must run between them.
    import asyncio

    from hiersrec.serve.batching import MicroBatcher

    events = []

    class Logging:
        def recommend_batch(self, sessions, exclude, **options):
            events.append(f"call k={options['k']}")
            if options["k"] == 2:  # a request that arrives while the model works: it runs when the loop gets back
                asyncio.get_running_loop().call_soon(events.append, "health")
            return trained_recommender(tiny_shop).recommend_batch(sessions, exclude=exclude, **options)

    async def scenario():
        batcher = MicroBatcher(Logging(), max_wait=0.0)
        batcher.start()
        await asyncio.gather(batcher.recommend([["i1"]], [[]], {"k": 2}), batcher.recommend([["i2"]], [[]], {"k": 3}))
        await batcher.stop()

    asyncio.run(scenario())
    assert events == ["call k=2", "health", "call k=3"]


@pytest.mark.parametrize("model_thread", [False, True])
def test_the_batcher_waits_for_the_previous_calls_clients_and_never_delays_a_lone_client(tiny_shop, model_thread):
    import asyncio
    import time

    from hiersrec.serve.batching import MicroBatcher

    counting = CountingRecommender(trained_recommender(tiny_shop))

    async def scenario():
        batcher = MicroBatcher(counting, max_wait=1.0, model_thread=model_thread)
        batcher.start()
        started = time.perf_counter()
        await batcher.recommend([["i1"]], [[]], {"k": 3})  # an idle service: scored at once
        await batcher.recommend([["i2"]], [[]], {"k": 3})  # the previous call answered one request: at once
        lone_seconds = time.perf_counter() - started
        await asyncio.gather(*(batcher.recommend([[f"i{i}"]], [[]], {"k": 3}) for i in (1, 2, 3)))

        async def coming_back(delay, item):  # three clients answered together return a little apart
            await asyncio.sleep(delay)
            return await batcher.recommend([[item]], [[]], {"k": 3})

        await asyncio.gather(*(coming_back(0.02 * i, f"i{i + 4}") for i in range(3)))
        await batcher.stop()
        return lone_seconds

    lone_seconds = asyncio.run(scenario())
    assert lone_seconds < 0.5  # far below max_wait: a lone client never waits
    assert counting.calls == [1, 1, 3, 3]  # the stragglers share one call


def test_the_written_response_is_what_pydantic_writes_for_the_response_model(client):
    from hiersrec.serve.schemas import RecommendResponse

    response = _post(client, {"sessions": [{"items": ["i3", "x"]}, {"items": ["y"]}], "k": 3})
    assert response.headers["content-type"] == "application/json"
    # Same fields, order, number formatting and compact separators as FastAPI's own serialisation of the model.
    assert RecommendResponse.model_validate_json(response.content).model_dump_json().encode() == response.content
    first, second = response.json()["results"]
    assert first["unknown_items"] == ["x"] and second["fallback"] == "popularity"
