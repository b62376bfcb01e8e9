"""The ranking service over HTTP on a free loopback port, on the embedded store (SQLite)
and the production store (Redis): rank, new items, behaviour, search, bad input, store
down, and the refusal to start on another embedding version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import AUTH, RedisServer, b64, copy_store, make_service

from moon_rec.data.images import encode_png
from moon_rec.loop import ServingArtifacts

PROFILES = ["embedded", pytest.param("production", marks=pytest.mark.services)]


@pytest.fixture(scope="module", params=PROFILES)
def live(
    request: pytest.FixtureRequest, serving_loop: ServingArtifacts
) -> Iterator[tuple[httpx.Client, Any]]:
    from serving.app import create_app
    from serving.server import BackgroundServer

    repo = (
        request.getfixturevalue("production_repo")
        if request.param == "production"
        else serving_loop.repo
    )
    service = make_service(serving_loop, repo, max_candidates=200)
    with BackgroundServer(create_app(service)) as url, httpx.Client(
        base_url=url, timeout=60, headers=AUTH
    ) as client:
        yield client, service


def _new_item_body(item_id: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    img = encode_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return {"item_id": item_id, "title": "crimson silk midi dress", "image": b64(img),
            "category_id": 1, "brand_id": 2}


def test_rank_new_item_and_behaviour(
    live: tuple[httpx.Client, Any], world_ids: dict[str, Any]
) -> None:
    client, service = live
    assert client.get("/healthz").status_code == 200
    user, cands = world_ids["short_user"], world_ids["items"][:100]
    r = client.post("/rank", json={"user_id": user, "query_text": "red dress",
                                   "item_ids": cands, "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_ids"] == cands and len(body["scores"]) == 100
    assert all(0.0 < s < 1.0 for s in body["scores"])
    top = [t["score"] for t in body["top_k"]]
    assert len(top) == 5 and top == sorted(top, reverse=True)
    assert top[0] == max(body["scores"])
    assert body["embedding_version"] == service.embedding_version
    assert body["model_version"].startswith("ranker-")

    # a new item: embedded, pushed online and into the center, rankable at once
    new_id = max(world_ids["items"]) + 1000
    r = client.post("/items", json=_new_item_body(new_id))
    assert r.status_code == 200, r.text
    online = service.client.item_embeddings([new_id], dim=service.dim)
    assert online.found[0]  # in the Feast online store, not only in memory
    r = client.post("/rank", json={"user_id": user, "query_text": "red dress",
                                   "item_ids": [new_id, *cands[:9]]})
    assert r.status_code == 200, r.text
    before = r.json()
    assert before["item_ids"][0] == new_id

    # a behaviour on it: the next /rank reads the longer sequence, and scores move
    r = client.post("/behaviors", json={"user_id": user, "item_id": new_id, "action": "buy"})
    assert r.status_code == 200, r.text
    after = client.post("/rank", json={"user_id": user, "query_text": "red dress",
                                       "item_ids": [new_id, *cands[:9]]}).json()
    assert after["history_length"] == min(before["history_length"] + 1, 20)
    assert not np.allclose(after["scores"], before["scores"])

    # metrics count what happened
    text = client.get("/metrics").text
    assert 'moon_requests_total{endpoint="/rank",status="200"}' in text
    assert "moon_request_latency_seconds_bucket" in text


def test_search_and_rank_without_candidates(
    live: tuple[httpx.Client, Any], world_ids: dict[str, Any]
) -> None:
    client, service = live
    catalog = set(service.center.all_items()[0].tolist())
    r = client.post("/search", json={"query_text": "red dress", "k": 7})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    scores = [i["score"] for i in items]
    assert len(items) == 7 and scores == sorted(scores, reverse=True)
    assert {i["item_id"] for i in items} <= catalog
    # image search: a catalog photo as the query
    r = client.post("/search", json={"query_image": b64(world_ids["image"]), "k": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3
    # exact search over the center agrees with the ANN index on this small catalog
    ids, vecs = service.center.all_items()
    q = service.query_vector("red dress", None)
    best = ids[np.argsort(-(vecs @ q))[:7]]
    assert [i["item_id"] for i in client.post(
        "/search", json={"query_text": "red dress", "k": 7}).json()["items"]] == best.tolist()
    r = client.post("/rank", json={"user_id": world_ids["user"], "query_text": "red dress"})
    assert r.status_code == 200, r.text
    assert r.json()["retrieved"] and len(r.json()["item_ids"]) == 100


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/rank", {"user_id": 10**9, "item_ids": [1]}, 404, "user_id"),
        ("/rank", {"user_id": "USER", "item_ids": [1]}, 422, "user_id"),
        ("/rank", {"user_id": -1, "item_ids": [1]}, 422, "user_id"),
        ("/rank", {"user_id": "U", "item_ids": [10**12]}, 404, "item_ids"),
        ("/rank", {"user_id": "U", "item_ids": []}, 422, "item_ids"),
        ("/rank", {"user_id": "U", "item_ids": list(range(201))}, 422, "item_ids"),
        ("/rank", {"user_id": "U", "item_ids": "1,2"}, 422, "item_ids"),
        ("/rank", {"user_id": "U"}, 422, "item_ids"),
        ("/rank", {"user_id": "U", "item_ids": [1], "top_k": 0}, 422, "top_k"),
        ("/rank", {"user_id": "U", "query_image": "%%%not base64"}, 422, "query_image"),
        ("/rank", {"user_id": "U", "query_image": "bm90IGFuIGltYWdl"}, 422, "query_image"),
        ("/rank", {"user_id": "U", "item_ids": [1], "colour": "red"}, 422, "colour"),
        ("/items", {"item_id": 5, "title": "x", "image": "bm90IGFuIGltYWdl"}, 422, "image"),
        ("/items", {"item_id": 5, "title": "   ", "image": "AAAA"}, 422, "title"),
        ("/items", {"item_id": 5, "image": "AAAA"}, 422, "title"),
        ("/search", {"k": 3}, 422, "query_text"),
        ("/search", {"query_text": "dress", "k": 100000}, 422, "k"),
        ("/behaviors", {"user_id": "U", "item_id": 10**12}, 404, "item_id"),
        ("/behaviors", {"user_id": "U", "item_id": "I", "action": "like"}, 422, "action"),
        # strict ids: JSON true / "281" are not ids (issue 14, 12)
        ("/rank", {"user_id": "U", "item_ids": [True, False]}, 422, "item_ids.0"),
        ("/rank", {"user_id": "U", "item_ids": ["281"]}, 422, "item_ids.0"),
        ("/rank", {"user_id": True, "item_ids": [1]}, 422, "user_id"),
        ("/rank", {"user_id": "U", "item_ids": [1], "top_k": 2.5}, 422, "top_k"),
        ("/search", {"query_text": "dress", "k": "3"}, 422, "k"),
        # event times outside the window (issue 14, 2 and 3)
        ("/behaviors", {"user_id": "U", "item_id": "I", "ts": "3000-01-01T00:00:00Z"}, 422,
         "ts"),
        ("/behaviors", {"user_id": "U", "item_id": "I", "ts": "9999-12-31T23:59:59.999999Z"},
         422, "ts"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    live: tuple[httpx.Client, Any], world_ids: dict[str, Any],
    path: str, body: dict[str, Any], status: int, field: str,
) -> None:
    client, _ = live
    fill = {"U": world_ids["user"], "I": world_ids["items"][0]}
    body = {k: fill.get(v, v) if isinstance(v, str) and k.endswith("_id") else v
            for k, v in body.items()}
    if body.get("item_ids") == [1]:
        body["item_ids"] = world_ids["items"][:1]
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field, err
    assert field in err["error"] or field in str(err.get("details"))


def test_malformed_json_and_wrong_content(live: tuple[httpx.Client, Any]) -> None:
    client, _ = live
    for content in (b"{", b'{"user_id": 1,', b"[1, 2]", b"\xff\xfe", b"null"):
        r = client.post("/rank", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content, r.text)
        assert r.json()["error"]
    # invalid UTF-8, an integer too long to parse, nesting too deep: 422 {"error", "field"}
    for content, why in ((b'{"user_id": 1, "query_text": "\xff\xfe"}', "UTF-8"),
                         (b'{"user_id": ' + b"9" * 5000 + b"}", "integer"),
                         (b"[" * 100_000 + b"]" * 100_000, "nested")):
        r = client.post("/rank", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content[:40], r.text)
        assert set(r.json()) == {"error", "field"} and r.json()["field"] == "body"
        assert why in r.json()["error"]
    r = client.post("/rank", content=b'{"user_id": 1,', headers={"content-type": "application/json"})
    assert r.json()["field"] == "body" and "malformed JSON" in r.json()["error"]
    r = client.post("/rank", content=b"user_id=1", headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500


def test_duplicate_candidates_appear_once_in_top_k(
    live: tuple[httpx.Client, Any], world_ids: dict[str, Any]
) -> None:
    client, _ = live
    a, b, c = world_ids["items"][:3]
    cands = [a, a, b, c, b]
    r = client.post("/rank", json={"user_id": world_ids["user"], "item_ids": cands,
                                   "top_k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_ids"] == cands and body["scores"][0] == body["scores"][1]
    top = [t["item_id"] for t in body["top_k"]]
    assert sorted(top) == sorted({a, b, c})


def test_no_checkpoint_load_runs_pickled_code(serving_loop: ServingArtifacts, tmp_path: Path) -> None:
    """Ranker and encoder checkpoints load with ``weights_only=True`` (issue 14, 13)."""
    import pickle
    import shutil

    import torch

    from moon_rec.ranking.evaluate import load_ranker
    from moon_rec.ranking.model_dir import WEIGHTS
    from moon_rec.training.trainer import _load_trainer_state

    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "moon_rec").rglob("*.py"), *(root / "serving").rglob("*.py")]:
        assert "weights_only=False" not in path.read_text(), path
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    model = tmp_path / "ranker"
    shutil.copytree(serving_loop.ranker, model)
    torch.save({"x": Payload()}, model / WEIGHTS)
    with pytest.raises(pickle.UnpicklingError):
        load_ranker(model)
    torch.save({"step": 1, "x": Payload()}, tmp_path / "trainer.pt")
    with pytest.raises(pickle.UnpicklingError):
        _load_trainer_state(tmp_path / "trainer.pt")
    assert not marker.exists()


@pytest.mark.services
def test_store_down_is_503_and_recovers(
    serving_loop: ServingArtifacts, production_repo: Path, redis_server: RedisServer,
    world_ids: dict[str, Any],
) -> None:
    from serving.app import create_app
    from serving.server import BackgroundServer

    service = make_service(serving_loop, production_repo)
    body = {"user_id": world_ids["user"], "item_ids": world_ids["items"][:10]}
    with BackgroundServer(create_app(service)) as url, httpx.Client(
        base_url=url, timeout=60, headers=AUTH
    ) as client:
        assert client.post("/rank", json=body).status_code == 200
        redis_server.crash()
        try:
            r = client.post("/rank", json=body)
            assert r.status_code == 503, r.text
            assert "online store unavailable" in r.json()["error"]
            assert client.get("/healthz").status_code == 503
            r = client.post("/behaviors", json={"user_id": world_ids["user"],
                                                "item_id": world_ids["items"][0]})
            assert r.status_code == 503, r.text
            # fail fast while the breaker is open (no wait on the client's retries)
            assert client.post("/rank", json=body).status_code == 503
        finally:
            redis_server.start()
        for _ in range(600):  # the background probe closes the breaker (bounded wait)
            if client.get("/healthz").status_code == 200:
                break
            time.sleep(0.1)
        r = client.post("/rank", json=body)
        assert r.status_code == 200, r.text


def test_refuses_to_start_on_another_embedding_version(
    serving_loop: ServingArtifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from moon_rec.cli import main
    from serving.service import VersionMismatch

    repo = copy_store(serving_loop, tmp_path, model_version="0123456789ab")
    with pytest.raises(VersionMismatch, match=r"refusing to start.*0123456789ab"):
        make_service(serving_loop, repo)
    status = main(["serve", "--model", str(serving_loop.ranker), "--repo", str(repo),
                   "--encoder", str(serving_loop.encoder), "--port", "1"])
    assert status == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "0123456789ab" in err
