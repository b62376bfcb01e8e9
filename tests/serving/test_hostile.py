"""Hostile images, anonymous writers and a blocked event loop (issue 27), against real
``moon serve`` processes on loopback (the embedded store, copied per module). The cases,
by the issue's numbers:
    1  small tall PNGs (16 x 1,048,576, 17 KB; 1024 x 16,384, 16 KB) are 422 naming the
       field in /items, /search and /rank, decided from the header (a header without any
       pixel data gets the same answer); the service stays healthy
    2  /healthz answers while an expensive request runs on a worker (the server reports
       it busy in the answer); a full pool answers 503 with Retry-After, then recovers
    3  a write without the token is 401 (before its body is read) and changes nothing; with
       it, 200; a service with no token refuses writes (403); a non-loopback --host warns
    5  strict prices; the OpenAPI schema carries the service's bounds (empty base64,
       top_k, candidates, the ts window), the write token and /metrics as text; a
       connection whose headers trickle in (or never come) is closed
(4, SQLite readers and a writer, is the store's: tests/featurestore.)
"""

from __future__ import annotations

import base64
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import AUTH, ServeProcess, b64, copy_store
from hostile_images import zeros_png
from prometheus_client import CONTENT_TYPE_LATEST

from moon_rec.data.images import encode_png
from moon_rec.loop import ServingArtifacts

TALL = [(16, 1_048_576), (1024, 16_384)]


@pytest.fixture(scope="module")
def served(
    serving_loop: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """``moon serve`` with the test write token, a 1 s header timeout and at most 300
    candidates."""
    root = tmp_path_factory.mktemp("hostile")
    repo = copy_store(serving_loop, root / "store")
    proc = ServeProcess(serving_loop, repo, root / "serve.log", "--header-timeout-s", "1",
                        "--max-candidates", "300")
    try:
        yield proc.wait()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def narrow(
    serving_loop: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """``moon serve`` with one worker, no queue and no write token."""
    root = tmp_path_factory.mktemp("narrow")
    repo = copy_store(serving_loop, root / "store")
    proc = ServeProcess(serving_loop, repo, root / "serve.log", "--workers", "1",
                        "--max-queue", "0", token=None)
    try:
        yield proc.wait()
    finally:
        proc.stop()


def _post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
          timeout: float = 60.0) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=timeout,
                      headers=AUTH if headers is None else headers)


def _item(item_id: int, seed: int, title: str = "crimson silk midi dress") -> dict[str, Any]:
    img = encode_png(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return {"item_id": item_id, "title": title, "image": b64(img), "category_id": 1,
            "brand_id": 2}


# -- 1: small tall images --------------------------------------------------------------------
@pytest.mark.parametrize(("width", "height"), TALL)
def test_a_small_tall_image_is_422_naming_the_field(
    served: ServeProcess, world_ids: dict[str, Any], width: int, height: int
) -> None:
    url = served.url
    for pixels in (True, False):  # no pixel data at all: the header alone decided it
        png = zeros_png(width, height, pixels=pixels)
        assert len(png) < 20_000
        image = base64.b64encode(png).decode()
        for path, body, field in (
            ("/items", {**_item(10**9 + 7, 0), "image": image}, "image"),
            ("/search", {"query_image": image, "k": 5}, "query_image"),
            ("/rank", {"user_id": world_ids["user"], "query_image": image}, "query_image"),
        ):
            r = _post(url, path, body)
            assert r.status_code == 422, (path, r.text)
            err = r.json()
            assert err["field"] == field
            assert err["error"].startswith(f"{field}: image of {width:,} x {height:,} pixels")
            assert "a side longer than the limit of 8,192" in err["error"]
    health = httpx.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["store"] is True


# -- 2: the event loop is never the one doing the work ---------------------------------------
def _expensive(world_ids: dict[str, Any]) -> dict[str, Any]:
    """An accepted image query that takes real work: 3000 x 3000 pixels to decode,
    convert and resize (within every limit)."""
    return {"user_id": world_ids["user"], "item_ids": world_ids["items"][:200],
            "query_image": base64.b64encode(zeros_png(3000, 3000)).decode()}


def test_healthz_answers_while_an_expensive_request_runs(
    served: ServeProcess, world_ids: dict[str, Any]
) -> None:
    body = _expensive(world_ids)
    done = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        with httpx.Client(base_url=served.url, timeout=120) as c:
            for _ in range(200):  # until /healthz has seen one running
                statuses.append(c.post("/rank", json=body).status_code)
                if done.is_set():
                    return

    worker = threading.Thread(target=load)
    worker.start()
    seen_busy = None
    try:
        with httpx.Client(base_url=served.url, timeout=120) as c:
            while worker.is_alive():
                health = c.get("/healthz")
                assert health.status_code == 200
                if health.json()["workers"]["busy"] >= 1:
                    # answered by the event loop while a worker was running a /rank
                    seen_busy = health.json()["workers"]
                    break
    finally:
        done.set()
        worker.join()
    assert seen_busy is not None, "no /healthz answer ever overlapped a running request"
    assert seen_busy["workers"] == 4 and seen_busy["max_queue"] == 32
    writers = httpx.get(f"{served.url}/healthz", timeout=30).json()["write_workers"]
    assert writers["workers"] == 1  # the writes' own lane: one store write at a time
    assert statuses and set(statuses) == {200}


def test_a_full_pool_is_503_with_retry_after_and_recovers(
    narrow: ServeProcess, world_ids: dict[str, Any]
) -> None:
    body = _expensive(world_ids)
    got: list[httpx.Response] = []
    def one(barrier: threading.Barrier) -> None:
        barrier.wait()
        got.append(_post(narrow.url, "/rank", body, timeout=120))

    for _ in range(5):  # bursts of 6 at a pool of 1 worker and no queue
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=one, args=(barrier,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(r.status_code == 503 for r in got):
            break
    refused = [r for r in got if r.status_code == 503]
    assert refused, [r.status_code for r in got]
    assert {r.status_code for r in got} == {200, 503}
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith("overloaded: 1 workers busy")
    # refusals never open the store breaker; the next request is served
    health = httpx.get(f"{narrow.url}/healthz", timeout=10).json()
    assert health["store"] is True and health["workers"]["busy"] == 0
    assert _post(narrow.url, "/rank", body, timeout=120).status_code == 200


# -- 3: writes need the token ----------------------------------------------------------------
def _score(url: str, user: int, item: int) -> float:
    r = _post(url, "/rank", {"user_id": user, "item_ids": [item]}, headers={})
    assert r.status_code == 200, r.text
    return float(r.json()["scores"][0])


def _history_length(url: str, user: int, item: int) -> int:
    r = _post(url, "/rank", {"user_id": user, "item_ids": [item]}, headers={})
    return int(r.json()["history_length"])


def test_an_anonymous_write_is_refused_and_an_authenticated_one_accepted(
    served: ServeProcess, world_ids: dict[str, Any]
) -> None:
    url, user = served.url, world_ids["user"]
    item = max(world_ids["items"]) + 7000 + uuid.uuid4().int % 10**6
    assert _post(url, "/items", _item(item, 1, "blue wool scarf")).status_code == 200
    before = _score(url, user, item)
    fresh = 10**12 + uuid.uuid4().int % 10**9
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    for headers, why in (({}, "missing"), (wrong, "not the write token"),
                         ({"Authorization": AUTH["Authorization"].replace("Bearer", "Basic")},
                          "not the write token")):
        r = _post(url, "/items", _item(item, 2, "black leather boots") | {"category_id": 7},
                  headers=headers)
        assert r.status_code == 401, r.text
        assert r.json() == {"error": f"authorization: {why} (Authorization: Bearer TOKEN)",
                            "field": "authorization"}
        assert r.headers["www-authenticate"] == "Bearer"
        r = _post(url, "/behaviors", {"user_id": fresh, "item_id": item}, headers=headers)
        assert r.status_code == 401, r.text
    # refused before the body is read: a malformed body is still a 401, not a 422
    r = httpx.post(f"{url}/items", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 401
    assert _score(url, user, item) == before  # the anonymous writes changed nothing
    assert _history_length(url, fresh, item) == 0
    # with the token: accepted, and they take effect
    r = _post(url, "/items", _item(item, 2, "black leather boots") | {"category_id": 7})
    assert r.status_code == 200, r.text
    assert _score(url, user, item) != before
    r = _post(url, "/behaviors", {"user_id": fresh, "item_id": item})
    assert r.status_code == 200, r.text
    assert _history_length(url, fresh, item) == 1


def test_a_service_without_a_token_refuses_every_write(
    narrow: ServeProcess, world_ids: dict[str, Any]
) -> None:
    for headers in ({}, AUTH):
        r = _post(narrow.url, "/behaviors",
                  {"user_id": world_ids["user"], "item_id": world_ids["items"][0]},
                  headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["field"] == "authorization" and "writes are disabled" in r.json()["error"]
    assert "writes refused (no token)" in narrow.log.read_text()


def test_binding_beyond_loopback_warns_what_is_open() -> None:
    from serving.cli import exposure_warning

    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure_warning(host, 8000, has_token=False) is None
    bare = exposure_warning("0.0.0.0", 8000, has_token=False)
    assert bare is not None and "no credentials are set" in bare
    assert "/rank, /search, /healthz and /metrics are open" in bare
    tokened = exposure_warning("10.1.2.3", 8000, has_token=True)
    assert tokened is not None and "plain HTTP" in tokened


def test_a_short_write_token_is_refused_at_start(serving_loop: ServingArtifacts,
                                                 tmp_path: Path) -> None:
    from moon_rec.cli import main

    (tmp_path / "token").write_text("short\n")
    assert main(["serve", "--model", str(serving_loop.ranker), "--repo",
                 str(serving_loop.repo), "--write-token-file", str(tmp_path / "token")]) == 2


# -- 5: the low findings ---------------------------------------------------------------------
@pytest.mark.parametrize("price", [True, False, "12.5", "nan", None])
def test_price_is_a_strict_number(served: ServeProcess, price: Any) -> None:
    body = _item(10**9 + 11, 3) | {"price": price}
    r = _post(served.url, "/items", body)
    if price is None:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422 and r.json()["field"] == "price", r.text
    for ok in (12, 12.5):
        assert _post(served.url, "/items", body | {"price": ok}).status_code == 200


def test_the_schema_is_what_the_service_enforces(
    served: ServeProcess, world_ids: dict[str, Any]
) -> None:
    url = served.url
    api = httpx.get(f"{url}/openapi.json", timeout=30).json()
    props = {name: api["components"]["schemas"][name]["properties"]
             for name in ("RankRequest", "SearchRequest", "ItemRequest", "BehaviourRequest")}

    def bound(field: dict[str, Any], key: str) -> Any:
        return next(v[key] for v in field.get("anyOf", [field]) if key in v)

    assert bound(props["RankRequest"]["top_k"], "maximum") == 1000
    assert bound(props["SearchRequest"]["k"], "maximum") == 1000
    assert bound(props["RankRequest"]["item_ids"], "maxItems") == 300  # --max-candidates
    for model, field in (("RankRequest", "query_image"), ("SearchRequest", "query_image"),
                         ("ItemRequest", "image")):
        assert bound(props[model][field], "minLength") == 1
    assert "now - 2592000 s, now + 300 s" in props["BehaviourRequest"]["ts"]["description"]
    user = world_ids["user"]
    for body, field in (({"user_id": user, "query_image": ""}, "query_image"),
                        ({"user_id": user, "item_ids": world_ids["items"][:1], "top_k": 1001},
                         "top_k"),
                        ({"user_id": user, "item_ids": list(range(301))}, "item_ids")):
        r = _post(url, "/rank", body)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = _post(url, "/rank", {"user_id": user, "item_ids": world_ids["items"][:5], "top_k": 999})
    assert r.status_code == 200, r.text  # within the schema: served
    # the writes say they need the token; /metrics says it is Prometheus text
    assert api["components"]["securitySchemes"]["writeToken"]["scheme"] == "bearer"
    for path in ("/items", "/behaviors"):
        assert api["paths"][path]["post"]["security"] == [{"writeToken": []}]
    assert "security" not in api["paths"]["/rank"]["post"]
    metrics = api["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [CONTENT_TYPE_LATEST] and CONTENT_TYPE_LATEST.startswith("text/plain")
    r = httpx.get(f"{url}/metrics", timeout=30)
    assert r.headers["content-type"].startswith("text/plain")
    assert "moon_requests_total" in r.text


def _closed_by_server(sock: socket.socket, trickle: bytes) -> bool:
    """Send ``trickle`` a byte at a time (none: stay silent) until the server closes the
    connection (True) or 30 reads pass without it (False)."""
    sock.settimeout(0.5)
    sent = 0
    for _ in range(30):
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent:sent + 1])
            except OSError:
                return True
            sent += 1
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_slow_and_silent_header_connections_are_cut(served: ServeProcess) -> None:
    host, port = "127.0.0.1", served.port
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection((host, port)) as slow:  # a byte every 0.5 s
        assert _closed_by_server(slow, request)
    with socket.create_connection((host, port)) as silent:  # connects, sends nothing
        assert _closed_by_server(silent, b"")
    # a prompt request on a kept-alive connection is served, and so is the next one
    with httpx.Client(base_url=served.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz").status_code == 200
