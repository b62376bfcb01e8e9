"""Benchmark: ``moon data import logs`` of a generated interaction log CSV vs a plain
``pyarrow.csv.read_csv`` of the same file, in the same run.

The log has N rows of ``customer`` (a 16-hex-digit string id), ``article`` (``sku-`` and
6 digits), ``ts`` (unix seconds), ``price`` and ``channel``: a positives-only purchase log,
imported through a mapping with string ids mapped to int64 ids, items taken from the log
(``items_from_logs``) and, with ``--negatives K``, K sampled negatives per purchase. Each
measurement runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own; CPU
seconds (user + sys) are reported beside wall time because the machine may be shared.
Prints one JSON object.

    python benchmarks/import_logs.py --rows 5000000
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
from pathlib import Path

import numpy as np

CHUNK = 500_000


def write_log(path: Path, rows: int, *, n_users: int, n_items: int, seed: int = 0) -> Path:
    """A purchase log CSV of ``rows`` rows, written in chunks (time-ordered)."""
    rng = np.random.default_rng(seed)
    t0 = 1_600_000_000
    span = 365 * 86_400
    with path.open("w") as fh:
        fh.write("customer,article,ts,price,channel\n")
        for s in range(0, rows, CHUNK):
            m = min(CHUNK, rows - s)
            users = rng.integers(0, n_users, m)
            # popularity skew: a Zipf-like draw of the articles
            items = np.minimum((rng.pareto(1.2, m) * n_items / 20).astype(np.int64), n_items - 1)
            ts = t0 + (np.arange(s, s + m) * span) // rows
            price = rng.integers(1, 20_000, m) / 100.0
            channel = rng.integers(1, 3, m)
            fh.writelines(f"{u:016x},sku-{i:06d},{t},{p:.2f},{c}\n"
                          for u, i, t, p, c in zip(users.tolist(), items.tolist(), ts.tolist(),
                                                   price.tolist(), channel.tolist(), strict=True))
    return path


def _usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2)}


def run_pyarrow(csv: str) -> dict[str, object]:
    import pyarrow.csv as pcsv

    t = time.perf_counter()
    table = pcsv.read_csv(csv)
    wall = time.perf_counter() - t
    return {"rows": table.num_rows, "wall_s": round(wall, 2), **_usage()}


def run_ours(csv: str, out: str, negatives: int) -> dict[str, object]:
    from moon_rec.data.logs import LogsMapping, import_logs

    mapping = LogsMapping.model_validate({
        "time": {"format": "unix_s"},
        "items_from_logs": True,
        "interactions": {"path": csv, "columns": {"user_id": "customer", "item_id": "article",
                                                  "ts": "ts"}, "action": "buy"},
        "negatives": {"k": negatives, "strategy": "uniform", "seed": 0} if negatives else None,
    })
    t = time.perf_counter()
    meta = import_logs(mapping, out)
    wall = time.perf_counter() - t
    return {"rows": meta["n_behaviors"], "wall_s": round(wall, 2), **_usage(),
            "n_users": meta["n_users"], "n_items": meta["n_items"],
            "n_impressions": meta["n_impressions"]}


def _child(args: list[str]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--negatives", type=int, default=0, help="K sampled negatives (0: none)")
    ap.add_argument("--workdir", type=Path, help="where the CSV and the world go (a temp dir)")
    ap.add_argument("--child", choices=("pyarrow", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "pyarrow":
        print(json.dumps(run_pyarrow(a.csv)))
        return
    if a.child == "ours":
        print(json.dumps(run_ours(a.csv, a.out, a.negatives)))
        return
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        csv = Path(tmp) / "log.csv"
        t = time.perf_counter()
        write_log(csv, a.rows, n_users=a.users, n_items=a.items)
        gen_s = time.perf_counter() - t
        base = _child(["--child", "pyarrow", "--csv", str(csv)])
        ours = _child(["--child", "ours", "--csv", str(csv), "--out", str(Path(tmp) / "w"),
                       "--negatives", str(a.negatives)])
        world_mb = sum(p.stat().st_size for p in (Path(tmp) / "w").rglob("*") if p.is_file())
        rows = a.rows
        report = {
            "benchmark": "import_logs",
            "rows": rows, "users": a.users, "items": a.items, "negatives": a.negatives,
            "csv_mb": round(csv.stat().st_size / 2**20, 1),
            "generate_s": round(gen_s, 1),
            "pyarrow_read_csv": {**base, "rows_per_s": round(rows / float(base["wall_s"]))},
            "ours": {**ours, "rows_per_s": round(rows / float(ours["wall_s"])),
                     "world_mb": round(world_mb / 2**20, 1)},
            "rows_per_s_ratio_ours_vs_pyarrow": round(float(base["wall_s"]) / float(ours["wall_s"]), 3),
            "peak_rss_ratio_ours_vs_pyarrow": round(float(ours["peak_rss_mb"])
                                                    / float(base["peak_rss_mb"]), 2),
            "cpu_s_ratio_ours_vs_pyarrow": round(float(ours["cpu_s"]) / float(base["cpu_s"]), 2),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
