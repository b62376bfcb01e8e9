"""Benchmark: a bounded loopback load test of ``moon serve`` with writes interleaved.

Setup: a serving loop (``--loop DIR`` written by ``moon_rec.loop.prepare_serving``, or the tiny
world built here), ``--processes`` ``moon serve`` processes on one store (the embedded
SQLite store unless ``--profile production``), all on loopback.

Phases (same clients, same request mix of /rank bodies):
- ``baseline``: ``--clients`` keep-alive clients send only /rank (100 candidates, a world
  user with history, a text query) for ``--baseline-s`` seconds;
- ``mixed``: the same for ``--seconds`` seconds, but every ``--behaviour-every``-th request
  of a client is a /behaviors (its own fresh user, server time) and every
  ``--item-every``-th a /items (a new item: encode + two writes + the change log).

Clients spread over the processes round-robin. Reported: requests, errors (anything but
200, transport errors included) with the statuses, throughput, latency per endpoint, and
``lost_behaviours``: of each client's newest L acknowledged behaviours (L = the store's
sequence length), how many are missing from its user's stored sequence (must be 0).

    python benchmarks/serving_load.py --loop DIR --clients 8 --seconds 60 --processes 2
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
WRITE_TOKEN = secrets.token_urlsafe(24)  # the servers' write token (writes need it)
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


def _stats(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    a = np.asarray(samples) * 1000.0
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}


def start_server(loop: Any, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "moon_rec.cli", "serve", "--model", str(loop.ranker),
           "--repo", str(loop.repo), "--encoder", str(loop.encoder), "--port", str(port),
           "--allow-unknown-users"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MOON_WRITE_TOKEN": WRITE_TOKEN}
    out = open(log, "wb")  # noqa: SIM115 - the child owns it until it ends
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


class Client(threading.Thread):
    """One keep-alive client: /rank bodies in rotation, writes interleaved when asked."""

    def __init__(self, k: int, url: str, bodies: list[dict[str, Any]], items: list[int],
                 stop_at: float, writes: tuple[int, int] | None, image: str) -> None:
        super().__init__(name=f"client-{k}")
        self.k, self.url, self.bodies, self.items = k, url, bodies, items
        self.stop_at, self.writes, self.image = stop_at, writes, image
        self.user = 10**12 + (os.getpid() % 10**5) * 100 + k  # fresh, this client's own
        self.lat: dict[str, list[float]] = {"/rank": [], "/behaviors": [], "/items": []}
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.acked: list[int] = []  # behaviour items, in acknowledgement order

    def _request(self, i: int) -> tuple[str, dict[str, Any]]:
        if self.writes is not None:
            every_b, every_i = self.writes
            if every_i and i % every_i == every_i - 1:
                item_id = 10**9 + self.k * 10**6 + i
                return "/items", {"item_id": item_id, "title": f"load test item {i}",
                                  "image": self.image, "category_id": 1, "brand_id": 1}
            if every_b and i % every_b == every_b - 1:
                item = self.items[(self.k * 7919 + i) % len(self.items)]
                return "/behaviors", {"user_id": self.user, "item_id": item, "action": "click"}
        return "/rank", self.bodies[(self.k + i) % len(self.bodies)]

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30, headers=AUTH) as c:
            i = 0
            while time.monotonic() < self.stop_at:
                path, body = self._request(i)
                t0 = time.perf_counter()
                try:
                    code = c.post(path, json=body).status_code
                except httpx.HTTPError as exc:
                    code = -1
                    self.statuses[type(exc).__name__] = self.statuses.get(type(exc).__name__, 0) + 1
                self.lat[path].append(time.perf_counter() - t0)
                key = f"{path} {code}"
                self.statuses[key] = self.statuses.get(key, 0) + 1
                if code != 200:
                    self.errors += 1
                elif path == "/behaviors":
                    self.acked.append(int(body["item_id"]))
                i += 1


def run_phase(urls: list[str], bodies: list[dict[str, Any]], items: list[int],
              clients: int, seconds: float, writes: tuple[int, int] | None,
              image: str) -> tuple[dict[str, Any], list[Client]]:
    stop_at = time.monotonic() + seconds
    threads = [Client(k, urls[k % len(urls)], bodies, items, stop_at, writes, image)
               for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = {p: [x for t in threads for x in t.lat[p]] for p in ("/rank", "/behaviors", "/items")}
    statuses: dict[str, int] = {}
    for t in threads:
        for key, n in t.statuses.items():
            statuses[key] = statuses.get(key, 0) + n
    n = sum(len(v) for v in lat.values())
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": n,
        "errors": sum(t.errors for t in threads), "statuses": statuses,
        "throughput_rps": round(n / wall, 1),
        "rank_rps": round(len(lat["/rank"]) / wall, 1),
        "latency": {p: _stats(v) for p, v in lat.items()},
    }, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--loop", type=Path, default=None, help="a serving loop folder to reuse")
    ap.add_argument("--work", type=Path, default=None, help="where to build (default: tmp)")
    ap.add_argument("--profile", default="embedded")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--baseline-s", type=float, default=15.0)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--behaviour-every", type=int, default=5)
    ap.add_argument("--item-every", type=int, default=50)
    args = ap.parse_args()

    import httpx

    from moon_rec.data.images import encode_png
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.loop import ServingArtifacts
    from serving.repo import open_repo_store
    from serving.server import free_port, wait_healthy

    work = args.work or Path(tempfile.mkdtemp(prefix="moon_serving_load_"))
    t0 = time.perf_counter()
    if args.loop is not None:
        loop = ServingArtifacts.load(args.loop)
    else:
        from benchmarks.serving_rank import build_loop

        loop = build_loop(work, None, args.profile)
    setup_s = time.perf_counter() - t0
    client = OnlineFeatureClient(open_repo_store(loop.repo))
    from moon_rec.data.embeddings import load_moon_embeddings

    emb = load_moon_embeddings(loop.embeddings, 32)
    items = emb.item_ids.tolist()
    rng = np.random.default_rng(0)
    seqs = client.user_sequences(list(range(1, 1000)))
    users = [u + 1 for u in np.flatnonzero(seqs.lengths > 0)[:32].tolist()]
    queries = ["red dress", "leather boots", "blue striped shirt", "wool scarf"]
    n_cand = min(args.candidates, len(items))
    bodies = [{"user_id": users[i % len(users)], "query_text": queries[i % len(queries)],
               "item_ids": rng.choice(items, n_cand, replace=False).tolist(), "top_k": 10}
              for i in range(64)]
    image = base64.b64encode(encode_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))).decode()

    procs, urls = [], []
    try:
        for k in range(args.processes):
            port = free_port()
            procs.append(start_server(loop, port, work / f"serve{k}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        for p, url in zip(procs, urls, strict=True):
            wait_healthy(url, p, log=work / f"serve{procs.index(p)}.log")
        for url in urls:  # warm up: first requests load lazily-built pieces
            for b in bodies[:8]:
                httpx.post(f"{url}/rank", json=b, timeout=60)
        report: dict[str, Any] = {
            "setup": {"loop": str(args.loop or work), "profile": loop.profile,
                      "processes": args.processes, "candidates": n_cand,
                      "items": len(items), "setup_s": round(setup_s, 1),
                      "load_avg_at_start": os.getloadavg()},
        }
        if args.baseline_s > 0:
            report["baseline"], _ = run_phase(urls, bodies, items, args.clients,
                                              args.baseline_s, None, image)
        mixed, threads = run_phase(urls, bodies, items, args.clients, args.seconds,
                                   (args.behaviour_every, args.item_every), image)
        # every client's newest L acknowledged behaviours are in its user's sequence
        lost = 0
        cap = client.max_len
        for t in threads:
            seq = client.user_sequences([t.user])
            stored = seq.item_ids[0, : int(seq.lengths[0])].tolist()
            want = list(reversed(t.acked))[:cap]
            lost += sum(1 for a, b in zip(want, stored, strict=False) if a != b)
            lost += max(0, len(want) - len(stored))
        mixed["behaviours_acknowledged"] = sum(len(t.acked) for t in threads)
        mixed["lost_behaviours"] = lost
        report["mixed"] = mixed
        if "baseline" in report and report["baseline"]["rank_rps"]:
            report["rank_rps_mixed_over_baseline"] = round(
                mixed["rank_rps"] / report["baseline"]["rank_rps"], 3)
        report["load_avg_at_end"] = os.getloadavg()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
