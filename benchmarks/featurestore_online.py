"""Benchmark: online lookup latency of the feature store client, SQLite vs Redis.

Loads N item embeddings with the chunked writer, then times
``OnlineFeatureClient.item_embeddings(ids, dim)`` (Feast ``get_online_features`` plus the
model_version check and the numpy conversion) for batches of 1 and 100 random ids.
Prints one JSON object with p50 / p99 / mean in milliseconds.

    python benchmarks/featurestore_online.py --n 10000 --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.featurestore_materialize import write_embeddings


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def measure(
    profile: str, data: Path, state: Path, n: int, repeats: int, dim: int
) -> dict[str, object]:
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.online import OnlineFeatureClient
    from moon_rec.featurestore.store import open_store

    mfs = open_store(
        profile,
        state,
        FeatureDataPaths.from_dir(data),
        project=f"bench_{uuid.uuid4().hex[:10]}",
        model_version="bench-v1",
    )
    try:
        materialize_embeddings(mfs)
        client = OnlineFeatureClient(mfs)
        rng = np.random.default_rng(0)
        out: dict[str, object] = {}
        for batch in (1, 100):
            for _ in range(10):  # warm-up
                client.item_embeddings(rng.integers(0, n, batch), dim=dim)
            samples = []
            for _ in range(repeats):
                ids = rng.integers(0, n, batch)
                t0 = time.perf_counter()
                got = client.item_embeddings(ids, dim=dim)
                samples.append(time.perf_counter() - t0)
                assert got.found.all()
            out[f"batch_{batch}"] = _stats(samples)
        return out
    finally:
        mfs.teardown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="items in the online store")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--profiles", nargs="+", default=["embedded", "production"])
    args = p.parse_args()
    result: dict[str, object] = {
        "benchmark": "online_lookup_latency",
        "n_items": args.n,
        "dim": args.dim,
        "repeats": args.repeats,
        "client": "OnlineFeatureClient.item_embeddings (Feast get_online_features)",
        "loadavg_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="moon-bench-online-") as tmp:
        data = Path(tmp) / "data"
        write_embeddings(data / "item_embeddings", args.n)
        for profile in args.profiles:
            store = "sqlite" if profile == "embedded" else "redis"
            result[store] = measure(
                profile, data, Path(tmp) / f"s-{profile}", args.n, args.repeats, args.dim
            )
    result["loadavg_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
