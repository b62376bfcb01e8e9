"""The HTTP API of the ranking service (FastAPI; OpenAPI schema at ``/openapi.json``).

    POST /rank       {user_id, query_text, query_image?, item_ids?, top_k} -> scores
    POST /items      {item_id, title, image, category_id?, brand_id?, ...} -> embedded + pushed
    POST /search     {query_text | query_image, k} -> nearest catalog items (ANN)
    POST /behaviors  {user_id, item_id, action, ts?} -> pushed; the next /rank sees it
    GET  /healthz    200 when the store answers, 503 otherwise; the worker pools' load
    GET  /metrics    Prometheus text exposition (not JSON): request counts and latency
                     histograms per endpoint and status

Trust model: the writes (``POST /items``, ``POST /behaviors``) need
``Authorization: Bearer TOKEN``, the service's write token (``ServiceConfig.write_token``);
without it they are 401, checked before the body is read; a service with no write token
refuses every write (403). The reads (``/rank``, ``/search``, ``/healthz``, ``/metrics``)
are open to whoever reaches the port: bind loopback, or put the service behind a proxy
that authenticates (and terminates TLS: the token travels in plain HTTP otherwise).

Images travel as base64 PNG/JPEG strings, within the image limits (pixels, side, aspect,
decoding memory: decided from the header before decoding). Errors are JSON
``{"error", "field"}``: 422 for bad input (also malformed JSON, invalid UTF-8, integers
too long to parse, nesting too deep and wrong types: FastAPI's validation, reshaped to
name the field; ids and counts are strict integers and ``price`` a strict number, so
``true`` or ``"281"`` is neither), 413 for a body over the limit (refused before it is
read), 401 / 403 for a write without the token, 404 for unknown users / items, 503 while
the online store is down (the breaker; bad input never opens it) and 503 with
``Retry-After`` while a worker pool is full. The schema's bounds are the service's
(``top_k``, ``k``, candidates, images; the ``ts`` window is relative to now, so it is in
the field's description).

The endpoints' work (decoding, encoding, ranking, store calls) runs on bounded worker
pools (``serving.workers``), off the event loop: ``/healthz`` and refusals never wait
behind an expensive request. Reads (``/rank``, ``/search``) share ``workers`` threads;
writes (``/items``, ``/behaviors``) run on their own ``write_workers`` (one by default: a
store has one write lock, and more writers of one process only queue on it and, SQLite's
busy wait being unfair, starve the other processes' writers).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
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
from serving.config import ServiceConfig
from serving.service import MAX_ID, RankingService, ServiceError
from serving.workers import WorkerPool

log = logging.getLogger(__name__)
# strict: JSON true / "281" / 1.0 are not ids (lax mode would take them as 1 / 281 / 1)
Id = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]
Count = Annotated[int, Field(strict=True)]
# strict: JSON true / "12.5" are not prices (an integer is a number)
Number = Annotated[float, Field(strict=True)]
WRITES = frozenset({"/items", "/behaviors"})
MAX_IMAGE_CHARS = 10_000_000  # base64 characters of one image field
LAT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class PrometheusText(Response):
    """The /metrics response: Prometheus text exposition (what the schema says it is)."""

    media_type = CONTENT_TYPE_LATEST


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class ItemResponse(BaseModel):
    item_id: int
    embedding_version: str
    event_timestamp: str
    semantic_ids: list[int] | None = Field(
        None, description="the item's semantic-ID code (one codeword per level, from the "
        "embed job's quantiser); null when the embeddings have no semantic IDs")


class SearchResponse(BaseModel):
    items: list[ScoredItem]
    embedding_version: str


class BehaviourResponse(BaseModel):
    user_id: int
    item_id: int
    action: str
    ts: str


@dataclass(frozen=True)
class RequestModels:
    """The request bodies, their bounds the service's (``ServiceConfig``), so the OpenAPI
    schema allows what the service accepts."""

    rank: type[BaseModel]
    item: type[BaseModel]
    search: type[BaseModel]
    behaviour: type[BaseModel]


def _seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def request_models(cfg: ServiceConfig) -> RequestModels:
    """The request models of a service configured by ``cfg``."""
    image_doc = (f"base64 PNG/JPEG ({'/'.join(cfg.image_formats)}), non-empty; at most "
                 f"{cfg.max_image_pixels:,} pixels, a side of {cfg.max_image_side:,}, an "
                 f"aspect ratio of {cfg.max_image_aspect:g}:1")

    class RankRequest(_Strict):
        user_id: Id = Field(description="the user (raw id)")
        query_text: str | None = Field(None, max_length=1000, description="the text query")
        query_image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_CHARS,
                                        description=f"image query: {image_doc}")
        item_ids: list[Id] | None = Field(
            None, min_length=1, max_length=cfg.max_candidates,
            description="candidates to score; omit to retrieve them by the query (ANN)")
        top_k: Count = Field(10, ge=1, le=cfg.max_k,
                             description="best candidates returned (each item once)")

    class ItemRequest(_Strict):
        item_id: Id
        title: str = Field(min_length=1, max_length=1000)
        image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_CHARS,
                                  description=f"{image_doc}; none: a text-only item, "
                                  "embedded from title + attributes")
        attributes: str | None = Field(None, max_length=10_000,
                                       description="attribute text (used without an image)")
        category_id: Count = Field(-1, ge=-1, le=MAX_ID)
        brand_id: Count = Field(-1, ge=-1, le=MAX_ID)
        spu_id: Count | None = Field(None, ge=0, le=MAX_ID)
        price: Number | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                     description="a JSON number (not a string or boolean)")

    class SearchRequest(_Strict):
        query_text: str | None = Field(None, max_length=1000)
        query_image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_CHARS,
                                        description=f"image query: {image_doc}")
        k: Count = Field(10, ge=1, le=cfg.max_k)

    class BehaviourRequest(_Strict):
        user_id: Id
        item_id: Id
        action: Literal["click", "cart", "buy"] = "click"
        ts: datetime | None = Field(
            None, description="event time (default: now; without a zone: UTC); accepted "
            f"within [now - {_seconds(cfg.behaviour_max_age_s)} s, now + "
            f"{_seconds(cfg.behaviour_max_ahead_s)} s], else 422 naming ts",
        )

    return RequestModels(RankRequest, ItemRequest, SearchRequest, BehaviourRequest)


class ErrorResponse(BaseModel):
    error: str
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (404, 413, 422, 503)
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, **{s: {"model": ErrorResponse} for s in (401, 403)}
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


async def _send_error(send: Any, status: int, error: str, field: str | None,
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """An ``{"error", "field"}`` response from ASGI middleware; the connection is closed
    (the body the client may still be sending is not read)."""
    body = json.dumps({"error": error, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class WriteToken:
    """ASGI middleware: a request to a write path (``POST /items``, ``/behaviors``) needs
    ``Authorization: Bearer TOKEN`` with the service's write token, decided from the
    headers before the body is read: 401 without it or with another token, 403 when the
    service has no write token (writes are off). Other paths pass untouched."""

    def __init__(self, app: Any, token: str | None, paths: frozenset[str] = WRITES) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.paths = paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.token is None:
            await _send_error(send, 403, "authorization: writes are disabled (the service "
                              "has no write token: moon serve --write-token-file FILE or "
                              "MOON_WRITE_TOKEN)", "authorization")
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            why = "missing" if not header else "not the write token"
            await _send_error(send, 401, f"authorization: {why} (Authorization: Bearer TOKEN)",
                              "authorization", ((b"www-authenticate", b"Bearer"),))
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413 ``{"error", "field"}``,
    decided from ``content-length`` before anything is read, or (a chunked body) as soon
    as the bytes received pass the limit; the app never sees such a body."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        await _send_error(send, 413, f"body: larger than {self.max_bytes} bytes", "body")

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
    """The FastAPI app over ``service``; the reads' work runs on a pool of the service's
    ``workers`` (``app.state.pool``), the writes' on one of its ``write_workers``
    (``app.state.write_pool``), each with ``max_queue`` waiting at most."""
    cfg = service.config
    models = request_models(cfg)
    pool = WorkerPool(cfg.workers, cfg.max_queue, cfg.retry_after_s)
    write_pool = WorkerPool(cfg.write_workers, cfg.max_queue, cfg.retry_after_s)
    token = cfg.write_token.get_secret_value().strip() if cfg.write_token else None
    app = FastAPI(
        title="moon_rec ranking service",
        version="1",
        description=__doc__,
    )
    app.add_middleware(BodyLimit, max_bytes=int(cfg.max_body_bytes))
    app.add_middleware(WriteToken, token=token)  # outside BodyLimit: checked first
    # documents the write token in the schema; WriteToken enforces it before the body
    write_auth = [Depends(HTTPBearer(auto_error=False, scheme_name="writeToken",
                                     description="the service's write token"))]
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
    app.state.pool = pool
    app.state.write_pool = write_pool

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
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status,
                            headers=exc.headers)

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

    def route(register: Any, model: type[BaseModel]) -> Any:
        """``register`` (``app.post(...)``) an endpoint whose ``req`` body is ``model``:
        the models are built per app, so the annotation is set here, not in the source."""
        def wrap(endpoint: Any) -> Any:
            endpoint.__annotations__["req"] = model
            return register(endpoint)
        return wrap

    @route(app.post("/rank", response_model=RankResponse, responses=ERRORS), models.rank)
    async def rank(req: Any) -> RankResponse:
        """Score candidates (or ANN-retrieved items) for a user and query."""
        t0 = time.perf_counter()
        q = req
        r = await pool.run(service.rank, q.user_id, q.item_ids, query_text=q.query_text,
                           query_image=q.query_image, top_k=q.top_k)
        return RankResponse(
            item_ids=r.item_ids, scores=r.scores,
            top_k=[ScoredItem(**t) for t in r.top_k], retrieved=r.retrieved,
            model_version=r.model_version, embedding_version=r.embedding_version,
            history_length=r.history_length,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    @route(app.post("/items", response_model=ItemResponse, responses=WRITE_ERRORS,
                    dependencies=write_auth), models.item)
    async def add_item(req: Any) -> ItemResponse:
        """Embed a new item (title + image), push it online and into the center (needs the
        write token)."""
        q = req
        out = await write_pool.run(service.add_item, q.item_id, q.title, q.image,
                             category_id=q.category_id, brand_id=q.brand_id, spu_id=q.spu_id,
                             price=q.price, attributes=q.attributes)
        return ItemResponse(**out)

    @route(app.post("/search", response_model=SearchResponse, responses=ERRORS), models.search)
    async def search(req: Any) -> SearchResponse:
        """The k nearest catalog items to a text or image query (MOON embeddings, ANN)."""
        q = req
        ids, scores = await pool.run(service.search, q.query_text, q.query_image, q.k)
        return SearchResponse(
            items=[ScoredItem(item_id=int(i), score=float(s)) for i, s in zip(ids, scores,
                                                                              strict=True)],
            embedding_version=service.embedding_version,
        )

    @route(app.post("/behaviors", response_model=BehaviourResponse, responses=WRITE_ERRORS,
                    dependencies=write_auth), models.behaviour)
    async def behaviors(req: Any) -> BehaviourResponse:
        """Append a behaviour event to the user's online sequence (push source; needs the
        write token)."""
        q = req
        out = await write_pool.run(service.add_behaviour, q.user_id, q.item_id, q.action,
                                   q.ts)
        return BehaviourResponse(**out)

    @app.get("/healthz", responses={503: {"model": ErrorResponse}})
    async def healthz() -> JSONResponse:
        """Liveness + the store: 200 while the store answers, else 503 (the breaker's
        state and the background health probe; never waits on a store call or a worker),
        and the worker pools' load (``workers`` of the reads, ``write_workers`` of the
        writes: busy, queued and the bounds)."""
        ok = service.check_store()
        body = {"status": "ok" if ok else "store unavailable", "store": ok,
                "workers": pool.stats(), "write_workers": write_pool.stats(),
                **service.info()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PrometheusText, responses={200: {
        "description": "Prometheus text exposition format (not JSON)"}})
    async def metrics() -> Response:
        """Prometheus metrics in the text exposition format: ``moon_requests_total``
        (counter by endpoint and status) and ``moon_request_latency_seconds``
        (histogram by endpoint)."""
        return PrometheusText(generate_latest(registry))

    return app
