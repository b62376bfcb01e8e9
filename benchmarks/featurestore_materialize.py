"""Benchmark: embedding materialization, ours (chunked) vs Feast's default ``materialize``.

N items x (32 + 64 + 128 + 256) float32 Matryoshka prefixes are written as parquet in the
embed job's format, then loaded into a fresh online store by
  - ours:  ``moon_rec.featurestore.materialize.materialize_embeddings`` (streamed batches,
           ``MoonSqliteOnlineStore`` / ``MoonRedisOnlineStore``);
  - feast: ``FeatureStore.materialize`` with Feast's default store and settings
           (``type: sqlite`` / ``redis``, whole table in one batch).
Each run is a fresh process, so its peak RSS is its own. Prints one JSON object.

Feast's default path holds the whole table in memory (1M x 480 floats needs > 15 GB here),
so the same-run comparison is made at ``--baseline-n`` items (default: ``--n`` up to
300k): when ``--n`` is larger, ours runs at both sizes and the speedup is taken at the
smaller one (the JSON says so). The machine is shared, so each run also reports its CPU
seconds (user + sys of its process), which do not depend on what else ran meanwhile.

    python benchmarks/featurestore_materialize.py --n 100000
    python benchmarks/featurestore_materialize.py --n 1000000 --profiles embedded production
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.encoders.config import DEFAULT_DIMS

DIMS = DEFAULT_DIMS  # the encoder config's default sizes
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_embeddings(folder: Path, n: int, rows_per_group: int = 50_000, seed: int = 0) -> Path:
    """N random L2-normalised Matryoshka rows as ``folder/part-00000.parquet``."""
    from moon_rec.data.embeddings import embedding_schema

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-00000.parquet"
    schema = embedding_schema(DIMS)
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for s in range(0, n, rows_per_group):
            m = min(rows_per_group, n - s)
            x = rng.standard_normal((m, max(DIMS))).astype(np.float32)
            cols: list[pa.Array] = [pa.array(np.arange(s, s + m, dtype=np.int64))]
            for d in DIMS:
                y = x[:, :d] / np.linalg.norm(x[:, :d], axis=1, keepdims=True)
                off = pa.array(np.arange(0, (m + 1) * d, d, dtype=np.int32))
                cols.append(pa.ListArray.from_arrays(off, pa.array(y.reshape(-1))))
            cols.append(pa.array(["bench-v1"] * m))
            cols.append(
                pa.array(np.full(m, int(T0.timestamp() * 1e6), dtype=np.int64)).cast(
                    pa.timestamp("us", tz="UTC")
                )
            )
            w.write_table(pa.Table.from_arrays(cols, schema=schema))
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from
    the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _profile_yaml(profile: str, default_store: bool, out: Path) -> Path:
    from moon_rec.featurestore.store import PROFILE_DIR

    text = (PROFILE_DIR / f"{profile}.yaml").read_text()
    if default_store:  # Feast's own stores
        text = text.replace(
            "type: moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore", "type: sqlite"
        ).replace("type: moon_rec.featurestore.stores.redis.MoonRedisOnlineStore", "type: redis")
    out.write_text(text)
    return out


def worker(args: argparse.Namespace) -> dict[str, object]:
    """One measured run in this process."""
    from moon_rec.featurestore.layout import ITEM_EMBEDDING_VIEW, FeatureDataPaths
    from moon_rec.featurestore.materialize import materialize_embeddings
    from moon_rec.featurestore.store import open_store

    state = Path(args.state)
    yaml_path = _profile_yaml(
        args.profile, args.worker == "feast", state.parent / f"{state.name}.yaml"
    )
    paths = FeatureDataPaths.from_dir(args.data)
    mfs = open_store(yaml_path, state, paths, project=f"bench_{uuid.uuid4().hex[:10]}")
    rss0 = peak_rss_mb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        if args.worker == "ours":
            # record=False: the registry bookkeeping is not what is measured, and the shared
            # PostgreSQL registry is touched by other sessions
            materialize_embeddings(mfs, batch_rows=args.batch_rows, record=False)
        else:
            mfs.store.materialize(
                T0 - timedelta(days=1), T0 + timedelta(days=1), [ITEM_EMBEDDING_VIEW]
            )
        seconds = time.perf_counter() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        # spot check: a row is readable
        got = mfs.store.get_online_features(
            features=["item_embedding:model_version"], entity_rows=[{"item_id": 0}]
        ).to_dict()
        assert got["model_version"] == ["bench-v1"], got
    finally:
        mfs.teardown()
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
        "rows_per_s": round(args.n / seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss0,
    }


def _run(
    kind: str, profile: str, data: Path, state: Path, n: int, batch_rows: int
) -> dict[str, object]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--profile",
        profile,
        "--data",
        str(data),
        "--state",
        str(state),
        "--n",
        str(n),
        "--batch-rows",
        str(batch_rows),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="items (the target is stated for 1M)")
    p.add_argument("--profiles", nargs="+", default=["embedded", "production"])
    p.add_argument("--batch-rows", type=int, default=10_000)
    p.add_argument(
        "--baseline-n",
        type=int,
        default=300_000,
        help="items for the same-run comparison with Feast's default (it must fit in memory)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip Feast's default materialize")
    p.add_argument("--worker", choices=["ours", "feast"], help=argparse.SUPPRESS)
    p.add_argument("--profile", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    base_n = min(args.n, args.baseline_n)
    with tempfile.TemporaryDirectory(prefix="moon-bench-mat-") as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        write_embeddings(data / "item_embeddings", args.n)
        base_data = data
        if base_n < args.n and not args.no_baseline:
            base_data = Path(tmp) / "data_base"
            write_embeddings(base_data / "item_embeddings", base_n)
        result: dict[str, object] = {
            "benchmark": "materialize_embeddings",
            "n_items": args.n,
            "dims": list(DIMS),
            "batch_rows": args.batch_rows,
            "parquet_mb": round(
                (data / "item_embeddings" / "part-00000.parquet").stat().st_size / 2**20, 1
            ),
            "data_gen_seconds": round(time.perf_counter() - t0, 1),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": os.getloadavg()[0],
        }
        if not args.no_baseline:
            result["baseline_n_items"] = base_n
            if base_n < args.n:
                result["baseline_note"] = (
                    f"Feast's default materialize holds the whole table in memory; it is "
                    f"compared with ours at {base_n} items in this run"
                )
        for profile in args.profiles:
            store = "sqlite" if profile == "embedded" else "redis"
            ours = _run(
                "ours", profile, data, Path(tmp) / f"s-{profile}-ours", args.n, args.batch_rows
            )
            entry: dict[str, object] = {"ours": ours}
            if not args.no_baseline:
                ours_b = ours
                if base_n < args.n:
                    ours_b = entry["ours_at_baseline_n"] = _run(
                        "ours",
                        profile,
                        base_data,
                        Path(tmp) / f"s-{profile}-oursb",
                        base_n,
                        args.batch_rows,
                    )
                feast = _run(
                    "feast",
                    profile,
                    base_data,
                    Path(tmp) / f"s-{profile}-feast",
                    base_n,
                    args.batch_rows,
                )
                entry["feast_default"] = feast
                if "seconds" in ours_b and "seconds" in feast:
                    entry["speedup"] = round(float(feast["seconds"]) / float(ours_b["seconds"]), 2)  # type: ignore[arg-type]
                    cpu_f, cpu_o = feast["cpu_seconds"], ours_b["cpu_seconds"]
                    entry["speedup_cpu"] = round(float(cpu_f) / float(cpu_o), 2)  # type: ignore[arg-type]
            result[store] = entry
        result["loadavg_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
