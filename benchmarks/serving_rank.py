"""Benchmark: one /rank request with 100 candidates and 50 behaviours — in process, over
HTTP on loopback, and against a naive Feast-per-request path measured in the same run;
then a bounded loopback load test with several concurrent clients.

Setup: the tiny world (or ``--loop DIR`` from ``moon_rec.loop.prepare_serving``) through the whole
loop with the ``cube_moon`` ranker (``--experiment``: e.g. ``cube_moon_full``, the full
spec's stored features; moon_dim 64, max_seq_len 50; one short epoch: latency
does not depend on training), the embedded store (SQLite) unless ``--profile production``.
The benchmark user gets 50 behaviours pushed first, so every request scores 100 candidates
against a 50-item sequence.

Paths timed (per request, same user / candidates / query rotation):
- ``service``: ``RankingService.rank`` — one Feast ``get_online_features`` (the user's
  sequence), candidate + behaviour embeddings and attributes from the in-memory center;
- ``naive_per_item`` (the issue's naive path): the same model and features, but Feast
  ``get_online_features`` is called for every candidate (its embedding + attributes) and
  every behaviour item (its embedding) on each request: 1 + 100 + 50 calls;
- ``naive_batched`` (a stronger baseline): the same reads batched per feature view, 4 calls;
- ``http``: ``moon serve`` in a subprocess, one keep-alive client, sequential requests;
- ``load``: ``--clients`` concurrent keep-alive clients for ``--load-s`` seconds.

    python benchmarks/serving_rank.py --requests 500 --load-s 60 --clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moon_rec.data.embeddings import emb_column

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000.0
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def build_loop(out: Path, world: Path | None, profile: str, experiment: str = "cube_moon") -> Any:
    from moon_rec.data.world import generate_world, make_config
    from moon_rec.loop import prepare_serving

    if world is None:
        world = out / "world"
        if not (world / "world.json").is_file():
            generate_world(make_config("tiny", 1), world, progress=False)
    return prepare_serving(
        world, out / "loop", experiment=experiment, profile=profile,
        train_overrides={"train": {"epochs": 1, "batch_size": 1024}},
    )


def _per_item_reads(
    service: Any, cands: np.ndarray, hist: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One ``get_online_features`` call per candidate and per behaviour item."""
    store, dim = service.mfs.store, service.dim
    emb = f"item_embedding:emb_{dim}"
    cand_feats = [emb, "item_embedding:model_version", "item_attributes:category_id",
                  "item_attributes:brand_id"]
    cv = np.zeros((len(cands), dim), np.float32)
    cat = np.full(len(cands), -1, np.int64)
    brand = np.full(len(cands), -1, np.int64)
    for j, i in enumerate(cands.tolist()):
        got = store.get_online_features(features=cand_feats, entity_rows=[{"item_id": i}]).to_dict()
        if got[emb_column(dim)][0] is not None:
            cv[j] = got[emb_column(dim)][0]
        cat[j] = -1 if got["category_id"][0] is None else got["category_id"][0]
        brand[j] = -1 if got["brand_id"][0] is None else got["brand_id"][0]
    hv = np.zeros((len(hist), dim), np.float32)
    for j, i in enumerate(hist.tolist()):
        got = store.get_online_features(
            features=[emb, "item_embedding:model_version"], entity_rows=[{"item_id": i}]
        ).to_dict()
        if got[emb_column(dim)][0] is not None:
            hv[j] = got[emb_column(dim)][0]
    return cv, cat, brand, hv


class RequestContent(nn.Module):
    """The naive path's content lookup: a ``MoonContentArch`` over the vectors read from
    Feast for the current request (``set`` before each forward)."""

    def __init__(self, dim: int) -> None:
        from moon_rec.ranking.item_tables import MoonContentArch

        super().__init__()
        self.dim = dim
        self.table = MoonContentArch(torch.zeros(0, dtype=torch.long), torch.zeros(0, dim))

    def set(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        from moon_rec.ranking.item_tables import MoonContentArch

        self.table = MoonContentArch(torch.from_numpy(ids), torch.from_numpy(vecs))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out: tuple[torch.Tensor, torch.Tensor] = self.table(ids)
        return out


def naive_model(service: Any, model_dir: Path) -> tuple[Any, Any]:
    """The service's ranker weights built on a ``RequestContent`` lookup: (model, lookup)."""
    from moon_rec.ranking.evaluate import load_ranker

    content = RequestContent(service.dim)
    model, _ = load_ranker(model_dir, content=content)
    return model, content


def naive_rank(
    service: Any, naive: tuple[Any, Any], user: int, cands: np.ndarray, query: str,
    per_item: bool = True,
) -> np.ndarray:
    """Score like ``RankingService.rank`` with every item feature read from Feast."""
    from moon_rec.ranking.features import request_batch
    from serving.ranking import CATALOG_FEATURES, request_sequences

    model, content = naive
    client, dim = service.client, service.dim
    seq = client.user_sequences([user])
    n = int(seq.lengths[0])
    hist = seq.item_ids[0, :n]
    if per_item:
        cand_vecs, cat, brand, hist_vecs = _per_item_reads(service, cands, hist)
    else:
        cand_vecs = client.item_embeddings(cands, dim).vectors
        attrs = client.item_attributes(cands)
        cat, brand = attrs["category_id"], attrs["brand_id"]
        hist_vecs = client.item_embeddings(hist, dim).vectors
    ids = np.concatenate([cands, hist])
    vecs = np.concatenate([cand_vecs, hist_vecs])
    ids, first = np.unique(ids, return_index=True)
    content.set(ids, vecs[first])
    qvec = service.query_vector(query, None)
    # the spec's features as the service reads them (catalog attributes read from Feast
    # here, the other stored features online), encoded by the ranker's fitted features
    fitted = model.features
    held = dict(zip(CATALOG_FEATURES, (cat, brand), strict=True))
    raw = {e.column: held[e.source] for e in fitted.spec.features if e.source in held}
    if fitted.spec.extras():
        raw |= service.spec_reader.read(user, cands, cat, brand)
    sparse_ids, dense = fitted.encode(raw, np.full(len(cands), time.time() * 1e6))
    batch = request_batch(
        model.layout, user_id=user, item_ids=cands,
        targets={k: raw[k] for k in model.layout.targets},
        sequences=request_sequences(fitted.spec, seq, n), sparse_ids=sparse_ids, dense=dense,
        query_text=query, query_embedding=qvec,
        query_token_buckets=service.ranker_config.query_token_buckets,
        max_seq_len=service.ranker_config.max_seq_len, content_dim=model.content_dim,
    )
    with torch.inference_mode():
        return torch.sigmoid(model(batch)).numpy()


CPU: dict[str, list[float]] = {}


def time_calls(fn: Any, n: int, warmup: int = 20, name: str | None = None) -> list[float]:
    """Wall times of ``n`` calls (CPU times of this thread go to ``CPU[name]``)."""
    for i in range(warmup):
        fn(i)
    out = []
    cpu = CPU.setdefault(name or "", [])
    for i in range(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(i)
        out.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return out


def start_server(loop: Any, port: int, repo: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "moon_rec.cli", "serve", "--model", str(loop.ranker),
           "--repo", str(repo), "--encoder", str(loop.encoder), "--port", str(port),
           "--refresh-s", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load_test(url: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = k
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post("/rank", json=bodies[i % len(bodies)])
                    code = r.status_code
                except httpx.HTTPError:
                    code = -1
                lat[k].append(time.perf_counter() - t0)
                if code != 200:
                    errors[k] += 1
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1
                i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    allv = [x for v in lat for x in v]
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(allv),
            "errors": sum(errors), "statuses": statuses,
            "throughput_rps": round(len(allv) / wall, 1), **_stats(allv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--loop", type=Path, default=None, help="a serving loop folder to reuse")
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="where to build (default: tmp)")
    ap.add_argument("--profile", default="embedded")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--behaviours", type=int, default=50)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--experiment", default="cube_moon",
                    help="the served ranker (cube_moon_full: the full spec's stored features)")
    args = ap.parse_args()

    import httpx
    import pyarrow as pa

    from moon_rec import runtime
    from moon_rec.featurestore.push import push_behaviour
    from moon_rec.loop import ServingArtifacts
    from serving.server import free_port, wait_healthy
    from serving.service import RankingService, ServiceConfig

    runtime.set_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="moon_serving_bench_"))
    t0 = time.perf_counter()
    if args.loop is not None:
        loop = ServingArtifacts.load(args.loop)
    else:
        loop = build_loop(work, args.world, args.profile, args.experiment)
    setup_s = time.perf_counter() - t0
    service = RankingService(loop.ranker, loop.repo, encoder=loop.encoder,
                             config=ServiceConfig(refresh_s=0))
    ids, _ = service.center.all_items()
    rng = np.random.default_rng(0)
    user = 10**6 + 7  # a fresh user with exactly B behaviours, pushed now
    now = time.time()
    hist = rng.choice(ids, args.behaviours, replace=False)
    events = pa.table({
        "user_id": pa.array([user] * len(hist), pa.int64()),
        "item_id": pa.array(hist, pa.int64()),
        "ts": pa.array([int((now - 3600 + i) * 1e6) for i in range(len(hist))],
                       pa.timestamp("us", tz="UTC")),
        "action": pa.array(["click"] * len(hist)),
    })
    push_behaviour(service.mfs, events, client=service.client)
    queries = ["red dress", "leather boots", "blue striped shirt", "wool scarf",
               "black handbag", "running shoes", "silk skirt", "denim jacket"]
    cand_sets = [rng.choice(ids, args.candidates, replace=False) for _ in range(16)]
    first = service.rank(user, cand_sets[0].tolist(), query_text=queries[0])
    assert first.history_length == min(args.behaviours, service.ranker_config.max_seq_len)
    # the naive path scores exactly like the service
    naive_m = naive_model(service, loop.ranker)
    max_diff = max(
        float(np.abs(naive_rank(service, naive_m, user, cand_sets[0], queries[0], per_item=p)
                     - np.asarray(first.scores)).max())
        for p in (True, False)
    )

    def svc(i: int) -> None:
        service.rank(user, cand_sets[i % 16].tolist(), query_text=queries[i % len(queries)])

    def naive(i: int) -> None:
        naive_rank(service, naive_m, user, cand_sets[i % 16], queries[i % len(queries)])

    def naive_b(i: int) -> None:
        naive_rank(service, naive_m, user, cand_sets[i % 16], queries[i % len(queries)],
                   per_item=False)

    def svc_cold_query(i: int) -> None:
        service.rank(user, cand_sets[i % 16].tolist(), query_text=f"red dress {i}")

    # interleave the two paths in rounds so that machine load hits both alike
    s_lat: list[float] = []
    n_lat: list[float] = []
    b_lat: list[float] = []
    rounds = 5
    for _ in range(rounds):
        s_lat += time_calls(svc, args.requests // rounds, warmup=5, name="service")
        n_lat += time_calls(naive, max(10, args.requests // rounds // 5), warmup=2,
                            name="naive_per_item")
        b_lat += time_calls(naive_b, args.requests // rounds, warmup=5, name="naive_batched")
    cold = time_calls(svc_cold_query, max(50, args.requests // 5), warmup=5,
                      name="service_uncached_query")
    feast_user = time_calls(lambda i: service.client.user_sequences([user]), 200,
                            name="feast_user_sequence_read")
    report: dict[str, Any] = {
        "setup": {"loop": str(work if args.loop is None else args.loop),
                  "profile": loop.profile, "setup_s": round(setup_s, 1),
                  "candidates": args.candidates, "behaviours": args.behaviours,
                  "ranker": service.ranker_config.behaviour.module,
                  "moon_dim": service.dim, "items": len(ids), "torch_threads": 1,
                  "load_avg_at_start": os.getloadavg()},
        "in_process": {"service": _stats(s_lat), "naive_per_item": _stats(n_lat),
                       "naive_batched": _stats(b_lat),
                       "service_uncached_query": _stats(cold),
                       "feast_user_sequence_read": _stats(feast_user),
                       "max_score_diff_service_vs_naive": max_diff},
        "cpu_time_per_request": {k: _stats(v) for k, v in CPU.items() if k},
    }
    ip = report["in_process"]
    for name in ("naive_per_item", "naive_batched"):
        for q in ("p50", "p99"):
            ip[f"speedup_{q}_vs_{name}"] = round(
                ip[name][f"{q}_ms"] / ip["service"][f"{q}_ms"], 2)
    if not args.no_http:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(loop, port, loop.repo)
        try:
            wait_healthy(url, proc)
            bodies = [{"user_id": user, "query_text": queries[i % len(queries)],
                       "item_ids": cand_sets[i % 16].tolist(), "top_k": 10} for i in range(64)]
            with httpx.Client(base_url=url, timeout=30) as c:
                def http(i: int) -> None:
                    r = c.post("/rank", json=bodies[i % len(bodies)])
                    assert r.status_code == 200, r.text
                h_lat = time_calls(http, args.requests, name="http_client")
                server_ms = [c.post("/rank", json=bodies[0]).json()["latency_ms"]
                             for _ in range(50)]
            report["http"] = {**_stats(h_lat),
                              "server_side_p50_ms": float(np.percentile(server_ms, 50))}
            if args.load_s > 0:
                report["load"] = load_test(url, bodies, args.clients, args.load_s)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report["targets"] = {"in_process_p99_ms": 10, "http_p99_ms": 20, "speedup_vs_naive": 5}
    report["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
