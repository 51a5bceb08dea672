"""The HTTP service: one trained run, loaded once at start-up, answering stateless recommendation requests.

Endpoints: ``POST /recommend`` (one or many sessions), ``GET /health``, ``GET /model``; the OpenAPI schema is at
``/openapi.json`` and ``/docs``. Bad input is answered with a 4xx whose ``error`` line names the field; it never
yields a 500. Served scores are the `hiersrec.recommend.Recommender`'s, i.e. the model's evaluated scores.

FastAPI is an optional extra (``pip install hiersrec[serve]``); nothing imports this module unless serving.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

import hiersrec
from hiersrec.errors import HierSRecError
from hiersrec.recommend import Recommendation, Recommender
from hiersrec.serve.batching import MicroBatcher
from hiersrec.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    RecommendRequest,
    RecommendResponse,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # a full request of MAX_SESSIONS long sessions fits well within this
_TOO_LARGE = f"request body: larger than {MAX_BODY_BYTES} bytes; send fewer sessions per request"


def create_app(run: str | Path | Recommender, batch_wait: float = 0.002, model_thread: bool = False) -> FastAPI:
    """HTTP app serving recommendations from one trained run directory.

    The run is loaded once, in the app's lifespan (not at import, not per request). Concurrent requests
    with the same options are scored together (`MicroBatcher`), which does not change an answer.

    Args:
        run: a run directory (`Recommender.from_artifact`), or a ready `Recommender`.
        batch_wait: the longest wait, in seconds, for the previous model call's clients to come back and share
            the next call (`MicroBatcher`'s ``max_wait``; 0 never waits).
        model_thread: score in a worker thread instead of the event loop's thread (`MicroBatcher`).

    Example:
        >>> import uvicorn  # doctest: +SKIP
        >>> uvicorn.run(create_app("runs/hiersrec-dgn"), host="127.0.0.1", port=8000)  # doctest: +SKIP
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.recommender = run if isinstance(run, Recommender) else Recommender.from_artifact(run)
        app.state.batcher = MicroBatcher(app.state.recommender, max_wait=batch_wait, model_thread=model_thread)
        app.state.batcher.start()
        logger.info("serving %s", app.state.recommender.describe().get("model"))
        yield
        await app.state.batcher.stop()

    app = FastAPI(
        title="hiersrec",
        version=hiersrec.__version__,
        description="Next-item recommendations for anonymous sessions (HierSRec and baselines).",
        lifespan=lifespan,
    )
    _add_error_handlers(app)

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
        max_body_size=MAX_BODY_BYTES,
    )
    async def recommend(body: RecommendRequest, request: Request) -> Response:
        """Top-k items for each session (raw item ids, oldest click first)."""
        return await _answer(request.app.state.batcher, body)

    @app.get("/health", response_model=HealthResponse)
    def health(request: Request) -> HealthResponse:
        """The run is loaded and answering."""
        return HealthResponse(status="ok", n_items=request.app.state.recommender.catalog.n_items)

    @app.get("/model", response_model=ModelResponse)
    def model_info(request: Request) -> ModelResponse:
        """Name, version, configuration, training-data fingerprint and metrics of the served run."""
        recommender: Recommender = request.app.state.recommender
        info = recommender.describe()
        meta = info.get("meta") or {}
        return ModelResponse(
            name=str(info["model"].get("name", "unknown")),
            version=str(meta.get("hiersrec_version", hiersrec.__version__)),
            config=info.get("config") or info["model"],
            data_fingerprint=_data_fingerprint(meta),
            metrics=info.get("metrics") or {},
            candidate_budgets=recommender.supports_candidates,
        )

    return app


async def _answer(batcher: MicroBatcher, body: RecommendRequest) -> Response:
    """The answer to a valid ``POST /recommend``: the recommendations, or a 422 for options the run refuses."""
    options = {
        "k": body.k,
        "exclude_seen": body.exclude_seen,
        "categories": body.categories,
        "candidate_budget": body.candidate_budget,
    }
    try:
        results = await batcher.recommend(
            [session.items for session in body.sessions], [session.exclude for session in body.sessions], options
        )
    except NotImplementedError as error:  # a candidate budget for a model without a category head
        return _error(422, f"candidate_budget: {error}")
    except HierSRecError as error:  # e.g. an unknown category id
        return _error(422, str(error))
    return _recommend_response(results)


def _recommend_response(results: list[Recommendation]) -> Response:
    """`RecommendResponse`'s JSON, written straight from the results.

    Building 20 pydantic items per session, validated once more against ``response_model`` and then dumped, costs
    several times more CPU per request than writing the JSON directly (measured in commit af43c03; the serving
    figures are in benchmarks/results/serve_load-dgn-full-2026-11-29.md). The route still declares
    ``response_model``, so the OpenAPI schema documents this body: its fields in this order, non-finite scores as
    null as pydantic writes them (a test checks the body against pydantic's own serialisation).
    """
    body = {
        "results": [
            {
                "items": [
                    {"item_id": i, "score": s, "category_id": c}
                    for i, s, c in zip(r.item_ids, r.scores, r.category_ids, strict=True)
                ],
                "unknown_items": r.unknown_items,
                "fallback": r.fallback,
            }
            for r in results
        ]
    }
    return Response(to_json(body, inf_nan_mode="null"), media_type="application/json")


def _data_fingerprint(meta: dict[str, Any]) -> str | None:
    for key in ("data_fingerprint", "fingerprint"):
        if meta.get(key):
            return str(meta[key])
    data = meta.get("data")
    return str(data["fingerprint"]) if isinstance(data, dict) and data.get("fingerprint") else None


def _error(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "detail": detail or []})


class _DeclaredBodyLimit:
    """Answers a request whose Content-Length exceeds the limit before reading it, in the service's error shape.

    A plain ASGI middleware (no per-request task), so it costs nothing on normal requests. Bodies streamed
    without a Content-Length are cut by the route's own ``max_body_size``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _error(413, _TOO_LARGE)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _RecommendFastPath:
    """Answers ``POST /recommend`` with an ``application/json`` body in plain ASGI, ahead of FastAPI's layers.

    Per request, FastAPI's middleware, routing and dependency solving cost about twice the CPU of everything
    else the service does outside the model (measured in process in commit 96d53ca), and with a few concurrent
    clients on two cores, CPU is what sets the latency. The answer is the route's own (`_answer`), from the
    same pydantic model, with the same error lines. Other requests, ``/recommend`` with another content type
    included, go on to FastAPI, whose ``/recommend`` route also documents the endpoint in the OpenAPI schema.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        is_recommend = scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/recommend"
        content_type = _content_type(scope) if is_recommend else None
        if is_recommend and not _is_json(content_type):
            shown = "none" if content_type is None else repr(content_type.decode("latin-1"))
            message = f"request body: Content-Type must be application/json, got {shown}"
            await _error(415, message)(scope, receive, send)
            return
        if not (is_recommend and content_type == b"application/json"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:  # streamed without a Content-Length (a declared one is checked earlier)
                await _error(413, _TOO_LARGE)(scope, receive, send)
                return
            more = message.get("more_body", False)
        try:
            body = RecommendRequest.model_validate_json(b"".join(chunks))
        except ValidationError as error:
            # Located as FastAPI locates body errors, so both ways name the field alike.
            errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            response = _validation_error(errors)
        else:
            response = await _answer(scope["app"].state.batcher, body)
        await response(scope, receive, send)


def _is_json(content_type: bytes | None) -> bool:
    # application/json, or a structured syntax suffix such as application/vnd.api+json (RFC 6839).
    return content_type is not None and (content_type == b"application/json" or content_type.endswith(b"+json"))


def _content_type(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def _validation_error(errors: Sequence[dict[str, Any]]) -> JSONResponse:
    """422 whose ``error`` line names each bad field (up to three) with pydantic's messages."""
    details = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors
    ]
    by_field: dict[str, list[str]] = {}  # a union (string or integer id) reports one message per branch
    for detail in details:
        by_field.setdefault(_field_name(detail), []).append(detail["msg"])
    lines = [f"{name}: {' or '.join(messages)}" for name, messages in list(by_field.items())[:3]]
    more = f" (and {len(by_field) - 3} more fields)" if len(by_field) > 3 else ""
    return _error(422, "; ".join(lines) + more, details)


def _add_error_handlers(app: FastAPI) -> None:
    app.add_middleware(_RecommendFastPath)
    app.add_middleware(_DeclaredBodyLimit)  # added last, so it runs first

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Routing errors (404, 405) and FastAPI's body-size limit (413) in the service's error shape.
        message = str(error.detail)
        response = _error(error.status_code, _TOO_LARGE if error.status_code == 413 else message)
        response.headers.update(error.headers or {})  # e.g. the Allow header of a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error.errors())


def _field_name(detail: dict[str, Any]) -> str:
    # ["body", "sessions", "0", "items", "2"] -> "sessions[0].items[2]"; unparsable JSON is the body itself.
    loc = detail["loc"]
    if detail["type"] == "json_invalid":
        return "request body"
    parts = loc[1:] if loc and loc[0] == "body" else loc
    name = ""
    for part in parts:
        if part.isdigit():
            name += f"[{part}]"
        elif not part.startswith(("str", "int", "float", "constrained", "function")):  # union branch labels
            name += f".{part}" if name else part
    return name or "request body"
