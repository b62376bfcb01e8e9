"""The ranker training set: the one owner of its format (written by
``moon_rec.featurestore.training_set``, read by ``moon_rec.ranking.data``).

One row per impression, point-in-time correct (features as of the impression's ``ts``)::

    request_id, user_id, item_id   int64
    ts                             timestamp[us, UTC]
    query_text                     string
    position                       int32
    clicked                        int8 (0/1)
    category_id, brand_id          int64 (the item's, as of ts; null when unknown then)
    hist_item_ids                  list<int64>   the user's behaviours before ts, newest first
    hist_category_ids              list<int64>
    hist_actions                   list<string>  click | cart | buy
    hist_ts                        list<timestamp[us, UTC]>
    split                          string: train (ts < train_end_ts) | test
    is_cold                        bool: the item launched at or after train_end_ts
    look_driven                    bool: the item's category is look-driven

then, after these, one column per *extra* feature of the feature spec it was built with
(:mod:`moon_rec.data.feature_spec`: ``spec.extras()``, in spec order, named by the entry):
int64 for a categorical (string for a ``dtype: string`` one), float64 for a numeric (a
stored time: microseconds since the epoch) (raw, as stored; null when unknown then;
transforms are the ranker's, fitted on the train split). A training set built with the
``ids`` spec has exactly the columns above.

A file, or a folder of parquet parts. Embeddings are not copied in: the ranker joins them
by item_id / query_text from the embedding table (``moon_rec.data.embeddings``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.embeddings import parquet_files, read_parquet
from moon_rec.data.errors import DataError
from moon_rec.data.feature_spec import FeatureSpec
from moon_rec.data.io import atomic_write_parquet
from moon_rec.data.schemas import TIMESTAMP

TRAINING_SET_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.int64()),
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("ts", TIMESTAMP),
        pa.field("query_text", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("clicked", pa.int8()),
        pa.field("category_id", pa.int64()),
        pa.field("brand_id", pa.int64()),
        pa.field("hist_item_ids", pa.list_(pa.int64())),
        pa.field("hist_category_ids", pa.list_(pa.int64())),
        pa.field("hist_actions", pa.list_(pa.string())),
        pa.field("hist_ts", pa.list_(TIMESTAMP)),
        pa.field("split", pa.string()),
        pa.field("is_cold", pa.bool_()),
        pa.field("look_driven", pa.bool_()),
    ]
)

# What a reader needs (the impression's columns; with a spec, its columns, else the base
# ones); the flags are optional (a training set from elsewhere may lack them).
IMPRESSION_COLUMNS: tuple[str, ...] = (
    "request_id", "user_id", "item_id", "query_text", "position", "clicked", "split",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    *IMPRESSION_COLUMNS, "category_id", "brand_id", "hist_item_ids", "hist_category_ids",
)
OPTIONAL_FLAGS: tuple[str, ...] = ("is_cold", "look_driven")


def training_set_schema(spec: FeatureSpec | None = None) -> pa.Schema:
    """``TRAINING_SET_SCHEMA`` plus the columns of ``spec``'s extra features (None: none)."""
    if spec is None:
        return TRAINING_SET_SCHEMA
    extra = [
        pa.field(e.column, (pa.string() if e.dtype == "string" else pa.int64())
                 if e.kind == "categorical" else pa.float64())
        for e in spec.extras()
    ]
    return pa.schema(list(TRAINING_SET_SCHEMA) + extra)


def write_training_set(
    table: pa.Table, path: str | Path, spec: FeatureSpec | None = None
) -> Path:
    """Cast ``table`` to ``training_set_schema(spec)`` (column order included, nothing
    else kept) and write it atomically; a missing column or an uncastable type is a
    DataError naming it."""
    path = Path(path)
    schema = training_set_schema(spec)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataError("missing column of the training set", file=str(path), column=missing[0])
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"not the training set's types ({exc})", file=str(path)) from exc
    return atomic_write_parquet(table, path, row_group_size=16_384)


def read_training_set(path: str | Path, spec: FeatureSpec | None = None) -> pa.Table:
    """The impression's columns, the optional flags present and ``spec``'s columns (None:
    the base ones) of a training set (file or folder), checked for presence; a missing
    column is a DataError naming file and column (for a spec's: the feature, and the spec
    to rebuild with)."""
    files = parquet_files(path)
    names = set(pq.read_schema(files[0]).names)
    required = IMPRESSION_COLUMNS if spec is not None else REQUIRED_COLUMNS
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError("missing column in training set", file=str(files[0]), column=missing[0])
    extras = spec.columns() if spec is not None else []
    absent = [c for c in extras if c not in names]
    if absent:
        assert spec is not None
        raise DataError(
            f"no column for feature {absent[0]} of feature spec {spec.name!r} (build the "
            f"training set with it: moon features training-set --features {spec.name})",
            file=str(files[0]), column=absent[0])
    flags = [c for c in OPTIONAL_FLAGS if c in names]
    if extras and "ts" in names:  # a spec's ``since`` steps measure from each row's time
        flags.append("ts")
    return read_parquet(files, list(required) + flags + extras)
