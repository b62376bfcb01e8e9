"""Diagnostics for the ranker's headline gap: is the signal in the world, the embeddings or
the module?

:func:`write_oracle_style_embeddings` writes "embeddings" built from a synthetic world's
hidden ``oracle_style`` vectors (the look that drives clicks in look-driven categories), in
the embedding-parquet format. A ranker trained on them shows what CUBE can reach with
content vectors that carry the style perfectly: a ceiling for a real MOON encoder's style
signal. For investigation only; ``oracle_`` columns are never production features.

    python -m moon_rec.ranking.diagnostics WORLD OUT [--noise 0.05]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.io import read_table

DIMS: tuple[int, ...] = (32, 64, 128, 256)


def write_oracle_style_embeddings(
    world: str | Path, out: str | Path, noise: float = 0.05, seed: int = 0
) -> Path:
    """Write ``out/items.parquet``: per item, [oracle_style, noise * N(0, 1)...] padded to
    256 dims, each Matryoshka prefix L2-normalised; model_version ``oracle-style``."""
    table = read_table(world, "items", columns=["item_id", "oracle_style"], validate=False)
    ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    style = np.stack(table.column("oracle_style").to_numpy(zero_copy_only=False)).astype(np.float32)
    rng = np.random.default_rng(seed)
    width = DIMS[-1] - style.shape[1]
    full = np.concatenate([style, noise * rng.normal(size=(len(ids), width))], axis=1)
    columns: dict[str, pa.Array] = {"item_id": pa.array(ids, pa.int64())}
    for d in DIMS:
        v = full[:, :d]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        columns[f"emb_{d}"] = pa.array(list(v.astype(np.float32)), pa.list_(pa.float32()))
    columns["model_version"] = pa.array(["oracle-style"] * len(ids))
    columns["event_timestamp"] = pa.array(
        [datetime(2026, 1, 1, tzinfo=UTC)] * len(ids), pa.timestamp("us", tz="UTC")
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out / "items.parquet")
    return out / "items.parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="oracle-style embeddings (a content ceiling)")
    parser.add_argument("world")
    parser.add_argument("out")
    parser.add_argument("--noise", type=float, default=0.05)
    args = parser.parse_args(argv)
    print(write_oracle_style_embeddings(args.world, args.out, args.noise))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
