"""Batch job: world tables -> the offline feature tables of the Feast views.

Writes ``DIR/user_sequences.parquet`` (behaviour sequences) and ``DIR/item_features.parquet``
(item attributes and counts); the embedding parts come from ``moon embed``.

    moon features build --world W --out DIR [--seq-len 50]
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError
from moon_rec.data.io import has_table, read_table, write_table
from moon_rec.data.validation import table_files
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN
from moon_rec.featurestore.tables import build_item_features, build_user_sequences

ITEM_COLUMNS = ["item_id", "category_id", "brand_id", "spu_id", "price", "launch_ts"]


def check_known_items(world: str | Path, name: str, table: pa.Table, items: pa.Table) -> None:
    """Every ``item_id`` of world table ``name`` (``table``) is in ``items``.

    Raises:
        DataError: naming the table's file, ``item_id`` and the first row (0-based, within
            that file) whose item is not in the catalog.
    """
    ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    known = items.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    bad = np.flatnonzero(~np.isin(ids, known))
    if bad.size == 0:
        return
    row = int(bad[0])
    file, start = Path(world) / name, 0
    for part in table_files(world, name):  # the part file that holds the row
        file, n = part, pq.ParquetFile(part).metadata.num_rows
        if row < start + n:
            break
        start += n
    more = f"; {bad.size - 1:,} more rows like it" if bad.size > 1 else ""
    raise DataError(f"unknown item_id {int(ids[row])} (not in the items table{more})",
                    file=str(file), column="item_id", row=row - start)


def build_feature_tables(
    world: str | Path,
    out: str | Path,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    stats_every: timedelta = timedelta(days=1),
) -> dict[str, object]:
    """Build both feature tables of ``world`` into ``out``; returns row counts and paths.

    Everything is read, checked (events name catalog items) and built before ``out`` is
    touched: a failure leaves no new folder behind (a folder that existed keeps its files).

    Raises:
        DataError: a bad world table, naming its file, column and row.
    """
    out = Path(out)
    items = read_table(world, "items", columns=ITEM_COLUMNS)
    behaviors = read_table(world, "behaviors", columns=["user_id", "item_id", "ts", "action"])
    check_known_items(world, "behaviors", behaviors, items)
    impressions = None
    if has_table(world, "impressions"):
        impressions = read_table(world, "impressions", columns=["item_id", "ts", "clicked"])
        check_known_items(world, "impressions", impressions, items)
    sequences = build_user_sequences(behaviors, items, max_len=seq_len)
    item_features = build_item_features(items, behaviors, impressions, stats_every=stats_every)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        seq_path = write_table(sequences, out / "user_sequences.parquet")
        item_path = write_table(item_features, out / "item_features.parquet")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "user_sequences": str(seq_path),
        "user_sequence_rows": sequences.num_rows,
        "item_features": str(item_path),
        "item_feature_rows": item_features.num_rows,
        "seq_len": seq_len,
    }
