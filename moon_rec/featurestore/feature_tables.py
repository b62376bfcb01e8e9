"""Batch job: world tables -> the offline feature tables of the Feast views.

Writes ``DIR/user_sequences.parquet`` (behaviour sequences), ``DIR/item_features.parquet``
(item attributes and counts) and one ``DIR/{view}.parquet`` per aggregate / attribute view
(``moon_rec.featurestore.aggregates``: daily windowed click counts, shares and smoothed
CTRs, user attributes, the items' extra columns); the embedding parts come from
``moon embed``.

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
from moon_rec.data.io import WORLD_META, has_table, read_table, train_end, write_table
from moon_rec.data.validation import table_files
from moon_rec.featurestore.aggregates import (
    DEFAULT_PRIOR_STRENGTH,
    build_aggregate_tables,
    extra_columns,
)
from moon_rec.featurestore.layout import (
    AGGREGATE_VIEWS,
    DEFAULT_SEQ_LEN,
    ITEM_CTR_VIEW,
    FeatureDataPaths,
)
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
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> dict[str, object]:
    """Build the feature tables of ``world`` into ``out``; returns row counts and paths.

    The aggregates' CTR prior is the CTR of the impressions before the world's
    ``train_end_ts`` (all impressions when the world has no ``world.json``), with
    ``prior_strength`` pseudo-impressions.

    Everything is read, checked (events name catalog items) and built before ``out`` is
    touched: a failure leaves no new folder behind (a folder that existed keeps its files).

    Raises:
        DataError: a bad world table, naming its file, column and row.
    """
    out = Path(out)
    items = read_table(world, "items", columns=ITEM_COLUMNS + _extras(world, "items"))
    users = read_table(world, "users", columns=["user_id", "signup_ts", *_extras(world, "users")])
    behaviors = read_table(world, "behaviors", columns=["user_id", "item_id", "ts", "action"])
    check_known_items(world, "behaviors", behaviors, items)
    impressions = None
    if has_table(world, "impressions"):
        impressions = read_table(world, "impressions", columns=["item_id", "ts", "clicked"])
        check_known_items(world, "impressions", impressions, items)
    split = (int(train_end(world).timestamp() * 1_000_000)
             if (Path(world) / WORLD_META).is_file() else None)
    sequences = build_user_sequences(behaviors, items, max_len=seq_len)
    item_features = build_item_features(items, behaviors, impressions, stats_every=stats_every)
    aggregates = build_aggregate_tables(items, users, behaviors, impressions,
                                        train_end_us=split, prior_strength=prior_strength)
    paths = FeatureDataPaths.from_dir(out)
    created = not out.exists()
    summary: dict[str, object] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        seq_path = write_table(sequences, out / "user_sequences.parquet")
        item_path = write_table(item_features, out / "item_features.parquet")
        for view in AGGREGATE_VIEWS:
            table = getattr(aggregates, view)
            target = Path(paths.table(view))
            if table is None:  # no extra item column: no table (nor a stale one)
                target.unlink(missing_ok=True)
                continue
            write_table(table, target)
            summary[f"{view}_rows"] = table.num_rows
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    meta = aggregates.item_ctr.schema.metadata or {}
    return {
        "user_sequences": str(seq_path),
        "user_sequence_rows": sequences.num_rows,
        "item_features": str(item_path),
        "item_feature_rows": item_features.num_rows,
        "seq_len": seq_len,
        **summary,
        f"{ITEM_CTR_VIEW}_prior": {k.decode(): v.decode() for k, v in meta.items()},
    }


def _extras(world: str | Path, name: str) -> list[str]:
    """The typed extra columns of world table ``name`` (from its first file's schema)."""
    files = table_files(world, name)
    if not files:
        return []
    return extra_columns(pq.read_schema(files[0]).empty_table(), name)
