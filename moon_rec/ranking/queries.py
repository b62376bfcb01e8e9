"""Query-text MOON embeddings for the ranker (CUBE's target-query similarity).

The batch embed job writes item embeddings only; the ranker also needs the query side.
This job encodes the distinct non-empty ``query_text`` values of a training set with the
same encoder checkpoint and writes them in the agreed format: ``query_text`` string,
``emb_{d}`` list<float32> per Matryoshka size (prefix renormalised), ``model_version``,
``event_timestamp``.

    moon ranker embed-queries --training-set T --checkpoint C --out Q.parquet
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from moon_rec import runtime
from moon_rec.data.errors import DataError
from moon_rec.ranking.data import parquet_files

TS = pa.timestamp("us", tz="UTC")


def distinct_queries(training_set: str | Path) -> list[str]:
    """The sorted distinct non-blank query texts of a training set."""
    texts: set[str] = set()
    for f in parquet_files(training_set):
        col = pq.read_table(f, columns=["query_text"]).column("query_text")
        texts.update(t for t in col.drop_null().to_pylist() if t and t.strip())
    return sorted(texts)


@torch.inference_mode()
def write_query_embeddings(
    training_set: str | Path, checkpoint: str | Path, out: str | Path, batch_size: int = 256
) -> Path:
    """Encode the training set's query texts with the encoder at ``checkpoint``; write
    ``out`` (a parquet file, atomically). Returns ``out``."""
    from moon_rec.encoders import MoonEncoder, matryoshka

    encoder = MoonEncoder.from_pretrained(checkpoint).eval()
    texts = distinct_queries(training_set)
    if not texts:
        raise DataError("no query texts", file=str(training_set), column="query_text")
    parts = [
        encoder.encode_text(texts[i : i + batch_size]).float().cpu()
        for i in range(0, len(texts), batch_size)
    ]
    full = torch.cat(parts)
    columns: dict[str, pa.Array] = {"query_text": pa.array(texts, pa.string())}
    for d in encoder.dims:
        vecs = matryoshka(full, d).numpy().astype(np.float32)
        columns[f"emb_{d}"] = pa.array(list(vecs), pa.list_(pa.float32()))
    columns["model_version"] = pa.array([encoder.model_version] * len(texts))
    columns["event_timestamp"] = pa.array([datetime.now(UTC)] * len(texts), TS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with runtime.atomic_path(out) as tmp:
        pq.write_table(pa.table(columns), tmp)
    return out
