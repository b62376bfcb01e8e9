"""The demo's serving step: start ``moon serve`` (a real process on a free loopback port)
over the demo's feature store, rank requests of the test period, add a brand-new item
through ``POST /items`` and rank it at once, and time ``/rank`` over HTTP. In a text-only
world (MovieLens) the new item has no photo: it is posted with its title and attributes.

Writes ``serving.json``: versions, latency p50/p99 (ms) of /rank with 100 candidates, the
new item's rank, and a few example responses.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from moon_rec.data.io import read_table, train_end
from moon_rec.encoders.inference import resolve_checkpoint
from moon_rec.loop import Layout, StepFailed
from moon_rec.runtime import atomic_write_text
from serving.server import free_port, wait_healthy


def exercise_service(layout: Layout, model_dir: Path, out: Path, *, n_requests: int = 200,
                     n_candidates: int = 100, seed: int = 0) -> dict[str, Any]:
    """Run the serving step (see the module docstring) over the layout's serving repository
    folder and encoder; returns what it writes to ``out``."""
    import httpx

    world = layout.world
    repo = layout.serving_repo
    encoder = resolve_checkpoint(layout.checkpoint)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = layout.file("serving.log")
    cmd = [sys.executable, "-m", "moon_rec.cli", "serve", "--model", str(model_dir), "--repo",
           str(repo), "--encoder", str(encoder), "--port", str(port), "--refresh-s", "0",
           "--allow-unknown-users"]
    rng = np.random.default_rng(seed)
    items = read_table(world, "items", columns=["item_id", "title", "category_id", "brand_id",
                                                 "image", "price", "attributes"])
    item_ids = items.column("item_id").to_numpy()
    import pyarrow as pa
    import pyarrow.compute as pc

    end = pa.scalar(train_end(world), pa.timestamp("us", tz="UTC"))
    imps = read_table(world, "impressions", columns=["user_id", "ts", "query_text", "item_id"])
    test = imps.filter(pc.greater_equal(imps.column("ts"), end))  # the test period's traffic
    users = test.column("user_id").to_numpy()
    queries = test.column("query_text").to_pylist()

    token = secrets.token_urlsafe(24)  # this run's write token (POST /items needs it)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "MOON_WRITE_TOKEN": token})
        try:
            try:
                wait_healthy(url, proc, timeout=300, log=log)
            except RuntimeError as exc:
                raise StepFailed(str(exc)) from None
            with httpx.Client(base_url=url, timeout=30.0,
                              headers={"Authorization": f"Bearer {token}"}) as http:
                def rank(user: int, query: str, cands: list[int], top_k: int = 10) -> Any:
                    r = http.post("/rank", json={"user_id": user, "query_text": query,
                                                 "item_ids": cands, "top_k": top_k})
                    if r.status_code != 200:
                        raise StepFailed(f"/rank answered {r.status_code}: {r.text}")
                    return r.json()

                # warm up, then time n_requests /rank calls of n_candidates each
                latencies = []
                for i in range(n_requests + 10):
                    j = int(rng.integers(len(users)))
                    cands = rng.choice(item_ids, size=min(n_candidates, len(item_ids)),
                                       replace=False).tolist()
                    t0 = time.perf_counter()
                    first = rank(int(users[j]), queries[j] or "", cands)
                    if i >= 10:
                        latencies.append((time.perf_counter() - t0) * 1000)
                example = first
                # a brand-new item: a copy of a catalog item (its photo, or in a text-only
                # world its attributes) under a new id and title
                src = int(rng.integers(len(item_ids)))
                new_id = int(item_ids.max()) + 1
                png = items.column("image")[src].as_py()
                title = f"new arrival {items.column('title')[src].as_py()}"
                body = {
                    "item_id": new_id, "title": title,
                    "category_id": int(items.column("category_id")[src].as_py()),
                    "brand_id": int(items.column("brand_id")[src].as_py()),
                    "price": float(items.column("price")[src].as_py()),
                }
                if png is not None:
                    body["image"] = base64.b64encode(png).decode()
                else:
                    body["attributes"] = items.column("attributes")[src].as_py()
                r = http.post("/items", json=body)
                if r.status_code != 200:
                    raise StepFailed(f"/items answered {r.status_code}: {r.text}")
                j = int(rng.integers(len(users)))
                others = rng.choice(item_ids, size=min(n_candidates, len(item_ids)) - 1,
                                    replace=False).tolist()
                # the title as the query where the world's requests have query texts (a
                # world without them, MovieLens, trained its rankers without any)
                query = title if any(q for q in queries) else ""
                ranked = rank(int(users[j]), query, [new_id, *others], top_k=len(others) + 1)
                order = [s["item_id"] for s in ranked["top_k"]]
                searched = http.post("/search", json={"query_text": title, "k": 10}).json()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = np.asarray(latencies)
    result = {
        "command": " ".join(cmd),
        "model_version": example["model_version"],
        "embedding_version": example["embedding_version"],
        "n_requests": len(latencies),
        "n_candidates": n_candidates,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "mean": float(lat.mean())},
        "example_rank_response": {k: example[k] for k in ("top_k", "model_version",
                                                          "embedding_version", "history_length")},
        "new_item": {"item_id": new_id, "title": title, "user_id": int(users[j]),
                     "n_candidates": len(order), "rank": order.index(new_id) + 1,
                     "score": float(ranked["scores"][0]),
                     "found_by_text_search": new_id in [s["item_id"] for s in searched["items"]]},
    }
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result
