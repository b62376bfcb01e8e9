"""Benchmark: ANN retrieval over N x d item embeddings (default 1M x 128), recall@10
against exact search and queries/s, with the exact search as the same-run baseline.

Data (synthetic, said plainly): catalog-shaped clustered embeddings. 24 category means,
``--clusters`` product clusters (category mean + a style offset), items = cluster centre
+ isotropic noise, L2-normalised; queries are held-out "photos" of random items (the
item's vector + more noise, renormalised), as in image-based search. Not real encoder
output: a trained MOON encoder on the small world has 10k items, not 1M.

Measured: build time; throughput of batched search (``--batch`` queries per faiss call,
``--threads`` OpenMP threads); recall@10 = |ANN top-10 ∩ exact top-10| / 10, averaged.

    python benchmarks/ann_retrieval.py --n 1000000 --dim 128 --queries 10000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(
    n: int, dim: int, n_queries: int, clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cats = rng.standard_normal((24, dim)).astype(np.float32)
    cat_of = rng.integers(0, 24, clusters)
    centres = cats[cat_of] + 0.8 * rng.standard_normal((clusters, dim)).astype(np.float32)
    # skewed cluster sizes, like category / product popularity
    p = 1.0 / np.arange(1, clusters + 1) ** 0.6
    assign = rng.choice(clusters, n, p=p / p.sum())
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        a = assign[s : s + 100_000]
        x[s : s + len(a)] = centres[a] + 0.6 * rng.standard_normal((len(a), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.integers(0, n, n_queries)
    q = x[src] + 0.05 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


CPU_S: list[float] = []


def timed_search(index: object, q: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, float]:
    """(ids [Q, k], wall seconds); the process CPU seconds are appended to ``CPU_S``."""
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(0, len(q), batch):
        out.append(index.search(q[s : s + batch], k)[1])  # type: ignore[attr-defined]
    CPU_S.append(time.process_time() - c0)
    return np.concatenate(out), time.perf_counter() - t0


def _qps(n: int, wall: float, threads: int) -> dict[str, float]:
    """Measured queries/s, and the rate on ``threads`` dedicated cores estimated from the
    CPU time the search used (the machine is shared: wall time includes waiting)."""
    return {"qps": round(n / wall, 1), "qps_cpu_est": round(n * threads / CPU_S[-1], 1)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True))
    return hits / truth.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 24, 32, 48])
    ap.add_argument("--k-factor", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--hnsw", action="store_true", help="also build plain HNSW32 (slow)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss

    from moon_rec.retrieval.ann import AnnConfig, AnnIndex
    from moon_rec.retrieval.index import ExactIndex

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    x, q = make_data(args.n, args.dim, args.queries, args.clusters, args.seed)
    ids = np.arange(args.n, dtype=np.int64)
    report: dict[str, object] = {
        "n": args.n, "dim": args.dim, "queries": args.queries, "threads": args.threads,
        "batch": args.batch, "k": args.k, "data": "synthetic clustered (see docstring)",
        "data_s": round(time.perf_counter() - t0, 1),
    }
    exact = ExactIndex(x, ids)
    truth, t_exact = timed_search(exact, q, args.k, args.batch)
    report["exact"] = _qps(len(q), t_exact, args.threads)
    del exact

    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    ann = AnnIndex.build(x, ids, AnnConfig(kind="ivf_pq_rf", nlist=args.nlist))
    build_s = time.perf_counter() - t0
    for nprobe in args.nprobe:
        for kf in args.k_factor:
            ann.config.nprobe, ann.config.k_factor = nprobe, kf
            timed_search(ann, q[: args.batch], args.k, args.batch)  # warm-up
            found, t = timed_search(ann, q, args.k, args.batch)
            results.append({
                "index": ann.config.factory(args.n, args.dim), "nprobe": nprobe,
                "k_factor": kf, "recall_at_10": round(recall(found, truth), 4),
                **_qps(len(q), t, args.threads), "speedup_vs_exact": round(t_exact / t, 1),
                "build_s": round(build_s, 1),
            })
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    del ann
    if args.hnsw:
        t0 = time.perf_counter()
        hn = AnnIndex.build(x, ids, AnnConfig(kind="hnsw", hnsw_m=32, ef_construction=40))
        build_s = time.perf_counter() - t0
        for ef in (32, 64, 128):
            hn.config.ef_search = ef
            found, t = timed_search(hn, q, args.k, args.batch)
            results.append({
                "index": "HNSW32", "ef_search": ef, "recall_at_10": round(recall(found, truth), 4),
                **_qps(len(q), t, args.threads), "speedup_vs_exact": round(t_exact / t, 1),
                "build_s": round(build_s, 1),
            })
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report["results"] = results
    ok = [r for r in results if float(r["recall_at_10"]) >= 0.95]
    report["best_at_recall_0.95"] = max(ok, key=lambda r: float(r["qps"])) if ok else None
    report["target"] = {"recall_at_10": 0.95, "qps": 5000}
    report["load_avg"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
