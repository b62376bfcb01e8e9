"""Batch job: the ranker training set, as of each impression's time, through Feast.

One row per impression, in the impressions' order, with the user's behaviour sequence and
the item's category/brand as of the impression's ``ts`` (Feast ``get_historical_features``
on DuckDB; only behaviours strictly before ``ts``), plus ``split`` (train before the
world's ``train_end_ts``, test after), ``is_cold`` (item launched after ``train_end_ts``) and
``look_driven`` (the item's category), and one column per extra feature of the feature
spec (``--features``, default ``ids``: exactly the base columns; the spec's Feast
features are read as of ``ts`` like the others). Embeddings are not copied in: the ranker
joins them from the embedding parquet by item_id / query_text.

    moon features training-set --world W --out T [--data DIR] [--seq-len 50] [--features full]
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.feature_spec import FeatureSpec, load_feature_spec
from moon_rec.data.io import has_table, read_table, train_end
from moon_rec.data.rows import RowIndex
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.data.training_set import training_set_schema, write_training_set
from moon_rec.featurestore.aggregates import with_target_keys
from moon_rec.featurestore.definitions import (
    DEFAULT_SEQ_LEN,
    ITEM_ATTRIBUTES_VIEW,
    USER_BEHAVIOUR_VIEW,
    FeatureDataPaths,
)
from moon_rec.featurestore.feature_tables import build_feature_tables
from moon_rec.featurestore.layout import TARGET_BRAND_KEY, TARGET_CATEGORY_KEY
from moon_rec.featurestore.retrieval import historical_features
from moon_rec.featurestore.services import check_spec, extra_join_keys
from moon_rec.featurestore.store import open_store

FEATURES = [
    f"{USER_BEHAVIOUR_VIEW}:hist_item_ids",
    f"{USER_BEHAVIOUR_VIEW}:hist_category_ids",
    f"{USER_BEHAVIOUR_VIEW}:hist_actions",
    f"{USER_BEHAVIOUR_VIEW}:hist_ts",
    f"{ITEM_ATTRIBUTES_VIEW}:category_id",
    f"{ITEM_ATTRIBUTES_VIEW}:brand_id",
]


def _lookup(
    keys: np.ndarray, table_keys: np.ndarray, values: np.ndarray, default: object
) -> np.ndarray:
    return RowIndex(table_keys).take(values, keys, default)


def assemble_training_set(
    impressions: pa.Table,
    joined: pa.Table,
    items: pa.Table,
    categories: pa.Table | None,
    train_end: datetime,
    spec: FeatureSpec | None = None,
) -> pa.Table:
    """The contract table from impressions [N] and their as-of features [N] (same order;
    ``joined`` holds a column per Feast field ``spec``'s extras read)."""
    n = impressions.num_rows
    ts_us = pc.cast(impressions.column("ts"), TIMESTAMP).cast(pa.int64()).to_numpy()
    end_us = int(train_end.timestamp() * 1_000_000)
    item_ids = impressions.column("item_id").to_numpy()
    launch = pc.cast(items.column("launch_ts"), TIMESTAMP).cast(pa.int64()).to_numpy()
    item_keys = items.column("item_id").to_numpy()
    is_cold = _lookup(item_ids, item_keys, launch > end_us, False).astype(bool)
    look = np.zeros(n, dtype=bool)
    if categories is not None:
        item_cat = _lookup(item_ids, item_keys, items.column("category_id").to_numpy(), -1)
        look = _lookup(
            item_cat.astype(np.int64),
            categories.column("category_id").to_numpy(),
            categories.column("look_driven").to_numpy(zero_copy_only=False).astype(bool),
            False,
        ).astype(bool)
    cols = {
        "request_id": impressions.column("request_id"),
        "user_id": impressions.column("user_id"),
        "item_id": impressions.column("item_id"),
        "ts": impressions.column("ts"),
        "query_text": impressions.column("query_text"),
        "position": impressions.column("position"),
        "clicked": impressions.column("clicked"),
        "category_id": joined.column("category_id"),
        "brand_id": joined.column("brand_id"),
        "hist_item_ids": joined.column("hist_item_ids"),
        "hist_category_ids": joined.column("hist_category_ids"),
        "hist_actions": joined.column("hist_actions"),
        "hist_ts": joined.column("hist_ts"),
        "split": pa.array(np.where(ts_us < end_us, "train", "test")),
        "is_cold": pa.array(is_cold),
        "look_driven": pa.array(look),
    }
    for e in spec.extras() if spec is not None else []:
        col = joined.column(e.field)
        if pa.types.is_timestamp(col.type):  # a time: microseconds since the epoch
            col = pc.cast(pc.cast(col, TIMESTAMP), pa.int64())
        cols[e.column] = col
    schema = training_set_schema(spec)
    return pa.table({f.name: pc.cast(cols[f.name], f.type) for f in schema}, schema=schema)


def spec_features(spec: FeatureSpec) -> list[str]:
    """The Feast features the training set reads: the base ones and ``spec``'s extras."""
    out = list(FEATURES)
    for ref in (e.source for e in spec.extras()):
        if ref not in out:
            out.append(ref)
    return out


def build_training_set(
    world: str | Path,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    state_dir: str | Path | None = None,
    profile: str = "embedded",
    seq_len: int = DEFAULT_SEQ_LEN,
    features: str | Path | FeatureSpec = "ids",
) -> dict[str, object]:
    """Write the ranker training set of ``world`` to ``out`` (parquet).

    Args:
        world: the world directory.
        out: the output parquet file.
        data_dir: feature tables made by ``moon features build`` (default: built now into a
            temporary folder).
        state_dir: the store's local state (default: a temporary folder).
        profile: the feature store profile (its offline store is DuckDB in both).
        seq_len: L, when the feature tables are built here.
        features: the feature spec (a name of ``configs/features/``, a YAML file, or a
            spec): its extra features become columns.
    Returns:
        a summary (rows, split counts, null counts).
    """
    spec = features if isinstance(features, FeatureSpec) else load_feature_spec(features)
    end = train_end(world)
    impressions = read_table(
        world,
        "impressions",
        columns=["request_id", "user_id", "ts", "query_text", "item_id", "position", "clicked"],
    )
    items = read_table(world, "items",
                       columns=["item_id", "category_id", "brand_id", "launch_ts"])
    categories = (
        read_table(world, "categories", columns=["category_id", "look_driven"])
        if has_table(world, "categories")
        else None
    )
    with tempfile.TemporaryDirectory(prefix="moon-training-set-") as tmp:
        if data_dir is None:
            data_dir = Path(tmp) / "features"
            build_feature_tables(world, data_dir, seq_len=seq_len)
        paths = FeatureDataPaths.from_dir(data_dir)
        mfs = open_store(profile, state_dir or Path(tmp) / "state", paths, seq_len=seq_len)
        entities = pa.table(
            {
                "user_id": impressions.column("user_id"),
                "item_id": impressions.column("item_id"),
                "ts": impressions.column("ts"),
            }
        )
        check_spec(mfs, spec)  # every feature in the store, with its type, or named
        if {TARGET_CATEGORY_KEY, TARGET_BRAND_KEY} & set(extra_join_keys(mfs, spec)):
            # the user x category / brand views join on the target item's category / brand
            entities = with_target_keys(entities, items)
        joined = historical_features(mfs, entities, spec_features(spec), timestamp_column="ts")
    table = assemble_training_set(impressions, joined, items, categories, end, spec)
    write_training_set(table, out, spec)
    split = table.column("split").to_numpy(zero_copy_only=False)
    return {
        "out": str(out),
        "rows": table.num_rows,
        "train_rows": int((split == "train").sum()),
        "test_rows": int((split == "test").sum()),
        "rows_without_history": table.column("hist_item_ids").null_count,
        "rows_without_item_features": table.column("category_id").null_count,
        "features": spec.name,
        "extra_columns": [e.column for e in spec.extras()],
    }
