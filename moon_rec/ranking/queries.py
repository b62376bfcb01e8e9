"""Query-text MOON embeddings for the ranker (CUBE's target-query similarity).

The batch embed job writes item embeddings only; the ranker also needs the query side.
This job encodes the distinct non-empty ``query_text`` values of a training set with the
same encoder checkpoint and writes them in the agreed format: ``query_text`` string,
``emb_{d}`` list<float32> per Matryoshka size (prefix renormalised), ``model_version``,
``event_timestamp``. A training set without query texts (MovieLens: no search queries) gets
an empty table of that format: no impression has a query, so the ranker's query-target
similarity ``s_q`` is 0 throughout (``has_query`` False), as it is for any query-less
impression.

    moon ranker embed-queries --training-set T --checkpoint C --out Q.parquet
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.embeddings import (
    QUERY_KEY,
    embedding_table,
    parquet_files,
    prefixes_of,
    write_embedding_table,
)

TS = pa.timestamp("us", tz="UTC")


def distinct_queries(training_set: str | Path) -> list[str]:
    """The sorted distinct non-blank query texts of a training set."""
    texts: set[str] = set()
    for f in parquet_files(training_set):
        col = pq.read_table(f, columns=["query_text"]).column("query_text")
        texts.update(t for t in col.drop_null().to_pylist() if t and t.strip())
    return sorted(texts)


def write_query_embeddings(
    training_set: str | Path, checkpoint: str | Path, out: str | Path, batch_size: int = 256
) -> Path:
    """Encode the training set's query texts with the encoder at ``checkpoint``; write
    ``out`` (a parquet file, atomically; no rows when it has no query texts). Returns
    ``out``. The texts go through the project's one encode path
    (``moon_rec.encoders.inference``), as serving's query vectors do."""
    from moon_rec.encoders import MoonEncoder
    from moon_rec.encoders.inference import embed_texts

    encoder = MoonEncoder.from_pretrained(checkpoint).eval()
    texts = distinct_queries(training_set)
    full = embed_texts(encoder, texts, batch_size)
    table = embedding_table(texts, prefixes_of(full, encoder.dims), encoder.model_version,
                            datetime.now(UTC), key=QUERY_KEY)
    return write_embedding_table(table, Path(out))
