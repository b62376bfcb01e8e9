"""The HTTP API of the ranking service (FastAPI; OpenAPI schema at ``/openapi.json``).

    POST /rank       {user_id, query_text, query_image?, item_ids?, top_k} -> scores
    POST /items      {item_id, title, image, category_id?, brand_id?, ...} -> embedded + pushed
    POST /search     {query_text | query_image, k} -> nearest catalog items (ANN)
    POST /behaviors  {user_id, item_id, action, ts?} -> pushed; the next /rank sees it
    GET  /healthz    200 when the store answers, 503 otherwise
    GET  /metrics    Prometheus text: request counts and latency histograms

Images travel as base64 PNG/JPEG strings. Errors are JSON ``{"error", "field"}``: 422 for
bad input (also malformed JSON, invalid UTF-8, integers too long to parse, nesting too
deep and wrong types: FastAPI's validation, reshaped to name the field; ids are strict
integers, so ``true`` or ``"281"`` is not an id), 413 for a body over the limit (refused
before it is read), 404 for unknown users / items, 503 while the online store is down (the
breaker; bad input never opens it). Endpoints are ``async`` and run on the event loop
thread: one request at a time per process, no thread hand-off on the hot path (scale out
with processes).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from moon_rec.data.errors import DataError
from serving.service import MAX_ID, RankingService, ServiceError

log = logging.getLogger(__name__)
# strict: JSON true / "281" / 1.0 are not ids (lax mode would take them as 1 / 281 / 1)
Id = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]
Count = Annotated[int, Field(strict=True)]
LAT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankRequest(_Strict):
    user_id: Id = Field(description="the user (raw id)")
    query_text: str | None = Field(None, max_length=1000, description="the text query")
    query_image: str | None = Field(
        None, max_length=10_000_000, description="base64 PNG/JPEG image query"
    )
    item_ids: list[Id] | None = Field(
        None, description="candidates to score; omit to retrieve them by the query (ANN)"
    )
    top_k: Count = Field(10, ge=1, le=1000,
                         description="best candidates returned (each item once)")


class ScoredItem(BaseModel):
    item_id: int
    score: float


class RankResponse(BaseModel):
    item_ids: list[int] = Field(description="the candidates, in request order")
    scores: list[float] = Field(description="click probabilities, in candidate order")
    top_k: list[ScoredItem]
    retrieved: bool = Field(description="candidates came from ANN retrieval")
    model_version: str
    embedding_version: str
    history_length: int
    latency_ms: float


class ItemRequest(_Strict):
    item_id: Id
    title: str = Field(min_length=1, max_length=1000)
    image: str | None = Field(None, min_length=1, max_length=10_000_000,
                              description="base64 PNG/JPEG; none: a text-only item, embedded "
                              "from title + attributes")
    attributes: str | None = Field(None, max_length=10_000,
                                   description="attribute text (used without an image)")
    category_id: Count = Field(-1, ge=-1, le=MAX_ID)
    brand_id: Count = Field(-1, ge=-1, le=MAX_ID)
    spu_id: Count | None = Field(None, ge=0, le=MAX_ID)
    price: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)


class ItemResponse(BaseModel):
    item_id: int
    embedding_version: str
    event_timestamp: str
    semantic_ids: list[int] | None = Field(
        None, description="the item's semantic-ID code (one codeword per level, from the "
        "embed job's quantiser); null when the embeddings have no semantic IDs")


class SearchRequest(_Strict):
    query_text: str | None = Field(None, max_length=1000)
    query_image: str | None = Field(None, max_length=10_000_000)
    k: Count = Field(10, ge=1, le=1000)


class SearchResponse(BaseModel):
    items: list[ScoredItem]
    embedding_version: str


class BehaviourRequest(_Strict):
    user_id: Id
    item_id: Id
    action: Literal["click", "cart", "buy"] = "click"
    ts: datetime | None = Field(
        None, description="event time (default: now); within the service's window around "
        "now (by default 30 days back to 5 minutes ahead), else 422"
    )


class BehaviourResponse(BaseModel):
    user_id: int
    item_id: int
    action: str
    ts: str


class ErrorResponse(BaseModel):
    error: str
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (404, 413, 422, 503)
}


def _body_parse_reason(exc: BaseException | None) -> str:
    """Why FastAPI could not parse a JSON body (it only says 400 "error parsing")."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return "an integer too long to parse"
    return type(exc).__name__ if exc is not None else "unreadable"


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413 ``{"error", "field"}``,
    decided from ``content-length`` before anything is read, or (a chunked body) as soon
    as the bytes received pass the limit; the app never sees such a body."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"error": f"body: larger than {self.max_bytes} bytes",
                           "field": "body"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed header itself
            if too_big:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        # no length: read it here, counting, then hand the app what was read
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(service: RankingService) -> FastAPI:
    """The FastAPI app over ``service``."""
    max_body = int(service.config.max_body_bytes)
    app = FastAPI(
        title="moon_rec ranking service",
        version="1",
        description=__doc__,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body)
    registry = CollectorRegistry()
    requests = Counter(
        "moon_requests", "requests by endpoint and status", ["endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "moon_request_latency_seconds", "request latency by endpoint", ["endpoint"],
        buckets=LAT_BUCKETS, registry=registry,
    )
    app.state.service = service

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        path = request.url.path
        endpoint = path if path in {"/rank", "/items", "/search", "/behaviors", "/healthz",
                                    "/metrics"} else "other"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": exc.column}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            why = _body_parse_reason(exc.__cause__)
            return JSONResponse({"error": f"body: malformed JSON: {why}", "field": "body"},
                                status_code=422)
        return JSONResponse({"error": str(exc.detail), "field": None},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # a bug, never the store (the guard turns store faults into 503): no traceback out
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "field": None},
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = list(exc.errors())
        details = []
        for e in errs[:10]:
            loc, msg = e.get("loc", ()), str(e.get("msg"))
            if e.get("type") == "json_invalid":  # loc is (body, character offset)
                pos = [p for p in loc if isinstance(p, int)]
                loc, msg = ("body",), f"malformed JSON{f' at character {pos[0]}' if pos else ''}"
            details.append({"field": _field(loc), "error": msg})
        first = details[0] if details else {"field": "body", "error": "invalid request"}
        return JSONResponse(
            {"error": f"{first['field']}: {first['error']}", "field": first["field"],
             "details": details},
            status_code=422,
        )

    @app.post("/rank", response_model=RankResponse, responses=ERRORS)
    async def rank(req: RankRequest) -> RankResponse:
        """Score candidates (or ANN-retrieved items) for a user and query."""
        t0 = time.perf_counter()
        r = service.rank(req.user_id, req.item_ids, query_text=req.query_text,
                         query_image=req.query_image, top_k=req.top_k)
        return RankResponse(
            item_ids=r.item_ids, scores=r.scores,
            top_k=[ScoredItem(**t) for t in r.top_k], retrieved=r.retrieved,
            model_version=r.model_version, embedding_version=r.embedding_version,
            history_length=r.history_length,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    @app.post("/items", response_model=ItemResponse, responses=ERRORS)
    async def add_item(req: ItemRequest) -> ItemResponse:
        """Embed a new item (title + image), push it online and into the center."""
        out = service.add_item(req.item_id, req.title, req.image, category_id=req.category_id,
                               brand_id=req.brand_id, spu_id=req.spu_id, price=req.price,
                               attributes=req.attributes)
        return ItemResponse(**out)

    @app.post("/search", response_model=SearchResponse, responses=ERRORS)
    async def search(req: SearchRequest) -> SearchResponse:
        """The k nearest catalog items to a text or image query (MOON embeddings, ANN)."""
        ids, scores = service.search(req.query_text, req.query_image, req.k)
        return SearchResponse(
            items=[ScoredItem(item_id=int(i), score=float(s)) for i, s in zip(ids, scores,
                                                                              strict=True)],
            embedding_version=service.embedding_version,
        )

    @app.post("/behaviors", response_model=BehaviourResponse, responses=ERRORS)
    async def behaviors(req: BehaviourRequest) -> BehaviourResponse:
        """Append a behaviour event to the user's online sequence (push source)."""
        return BehaviourResponse(**service.add_behaviour(req.user_id, req.item_id, req.action,
                                                         req.ts))

    @app.get("/healthz", responses={503: {"model": ErrorResponse}})
    async def healthz() -> JSONResponse:
        """Liveness + the store: 200 while the store answers, else 503 (the breaker's
        state and the background health probe; never waits on a store call)."""
        ok = service.check_store()
        body = {"status": "ok" if ok else "store unavailable", "store": ok, **service.info()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: request counts and latency histograms per endpoint."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
