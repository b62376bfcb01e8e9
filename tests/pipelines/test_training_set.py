"""Point-in-time training sets: no leakage, rows without history kept, input order kept."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moon_rec.data.images import encode_png
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.data.training_set import TRAINING_SET_SCHEMA
from moon_rec.featurestore.feature_tables import build_feature_tables
from moon_rec.featurestore.training_set import build_training_set


def _world(root: Path, t0: datetime, h: timedelta) -> Path:
    """A hand-made world whose timestamps make leakage visible."""
    root.mkdir(parents=True)
    items = pa.table(
        {
            "item_id": pa.array([10, 11, 12, 13], pa.int64()),
            "category_id": pa.array([1, 1, 2, 2], pa.int64()),
            "brand_id": pa.array([5, 6, 7, 8], pa.int64()),
            "spu_id": pa.array([1, 2, 3, 4], pa.int64()),
            "price": [1.0, 2.0, 3.0, 4.0],
            # item 13 launches after train_end (cold) and after some impressions
            "launch_ts": pa.array([t0, t0, t0, t0 + 50 * h], TIMESTAMP),
            "title": ["a", "b", "c", "d"],
            "attributes": [""] * 4,
            "image": pa.array([encode_png(np.zeros((8, 8, 3), np.uint8))] * 4, pa.binary()),
        }
    )
    pq.write_table(items, root / "items.parquet")
    beh = pa.table(
        {
            "user_id": pa.array([1, 1, 1, 2], pa.int64()),
            "item_id": pa.array([10, 11, 12, 12], pa.int64()),
            "ts": pa.array([t0 + 1 * h, t0 + 2 * h, t0 + 3 * h, t0 + 5 * h], TIMESTAMP),
            "action": ["click", "cart", "buy", "click"],
            "query_text": ["a", "b", "c", "d"],
            "query_image_id": pa.array([None] * 4, pa.int64()),
        }
    )
    pq.write_table(beh, root / "behaviors.parquet")
    us = timedelta(microseconds=1)
    imp_ts = [
        t0 + 2 * h,
        t0 + 2 * h - us,
        t0 + 2 * h + us,
        t0,
        t0 + 60 * h,
        t0 + 49 * h,
        t0 + 4 * h,
    ]
    imp = pa.table(
        {
            "request_id": pa.array(range(7), pa.int64()),
            # the second row has the same user/item/ts as ... nothing; rows are out of time order
            "user_id": pa.array([1, 1, 1, 1, 2, 3, 2], pa.int64()),
            "ts": pa.array(imp_ts, TIMESTAMP),
            "query_text": ["q"] * 7,
            "item_id": pa.array([13, 12, 11, 10, 13, 13, 10], pa.int64()),
            "position": pa.array([0] * 7, pa.int32()),
            "clicked": pa.array([0, 1, 0, 1, 0, 1, 0], pa.int8()),
        }
    )
    pq.write_table(imp, root / "impressions.parquet")
    users = pa.table(
        {"user_id": pa.array([1, 2, 3], pa.int64()), "signup_ts": pa.array([t0] * 3, TIMESTAMP)}
    )
    pq.write_table(users, root / "users.parquet")
    (root / "world.json").write_text(json.dumps({"train_end_ts": (t0 + 48 * h).isoformat()}))
    return root


def test_as_of_join_has_no_leakage_and_keeps_order(
    tmp_path: Path, time0: datetime, hour: timedelta
) -> None:
    world = _world(tmp_path / "w", time0, hour)
    out = tmp_path / "train.parquet"
    summary = build_training_set(world, out, seq_len=2)
    t = pq.read_table(out)
    assert t.schema.equals(TRAINING_SET_SCHEMA)
    rows = t.to_pylist()
    assert [r["request_id"] for r in rows] == list(range(7))  # input order
    assert summary["rows"] == 7
    # impression exactly at a behaviour's ts (t0+2h) sees only behaviours strictly before
    assert rows[0]["hist_item_ids"] == [10]
    assert rows[0]["hist_ts"] == [time0 + hour]
    # 1 us before the behaviour at t0+2h: still only item 10
    assert rows[1]["hist_item_ids"] == [10]
    # 1 us after: the cart on item 11 is visible, most recent first
    assert rows[2]["hist_item_ids"] == [11, 10] and rows[2]["hist_actions"] == ["cart", "click"]
    assert rows[2]["hist_category_ids"] == [1, 1]
    # before any behaviour: row kept, history null
    assert rows[3]["hist_item_ids"] is None and rows[3]["category_id"] == 1
    # a user without any behaviour: kept with nulls
    assert rows[5]["hist_item_ids"] is None
    # item 13 before its launch: no item features (nulls), row kept
    assert rows[0]["category_id"] is None and rows[0]["brand_id"] is None
    assert rows[4]["category_id"] == 2 and rows[4]["brand_id"] == 8
    # user 2 at t0+4h: its click at t0+5h is in the future
    assert rows[6]["hist_item_ids"] is None
    # max length L = 2 at t0+60h for user 2: one behaviour
    assert rows[4]["hist_item_ids"] == [12]
    assert [r["split"] for r in rows] == ["train"] * 4 + ["test", "test", "train"]
    assert [r["is_cold"] for r in rows] == [True, False, False, False, True, True, False]


def test_sequence_length_cap(tmp_path: Path, time0: datetime, hour: timedelta) -> None:
    world = _world(tmp_path / "w", time0, hour)
    tables = build_feature_tables(world, tmp_path / "f", seq_len=2)
    seq = pq.read_table(tables["user_sequences"]).to_pylist()
    assert max(len(r["hist_item_ids"]) for r in seq) == 2
    last_of_user1 = [r for r in seq if r["user_id"] == 1][-1]
    assert last_of_user1["hist_item_ids"] == [12, 11]
    assert last_of_user1["event_timestamp"] == time0 + 3 * hour + timedelta(microseconds=1)


@pytest.mark.slow
def test_training_set_on_tiny_world(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    summary = build_training_set(tiny_world, out)
    t = pq.read_table(out)
    imp = pq.read_table(tiny_world / "impressions.parquet")
    assert t.num_rows == imp.num_rows == summary["rows"]
    assert t.column("request_id").equals(imp.column("request_id"))
    assert t.column("item_id").equals(imp.column("item_id"))
    # no leakage: every history timestamp is strictly before the impression
    for ts, hist in zip(t.column("ts").to_pylist(), t.column("hist_ts").to_pylist(), strict=True):
        if hist:
            assert max(hist) < ts and hist == sorted(hist, reverse=True)
    assert summary["train_rows"] > 0 and summary["test_rows"] > 0
    assert t.column("category_id").null_count == 0


def test_training_set_has_exactly_the_specs_columns(
    tmp_path: Path, time0: datetime, hour: timedelta
) -> None:
    """``--features full``: the base columns, then one per extra feature of the spec, in
    spec order, point-in-time like the others (counts strictly before each row's ts)."""
    from moon_rec.data.feature_spec import load_feature_spec
    from moon_rec.data.training_set import training_set_schema

    world = _world(tmp_path / "w", time0, hour)
    out = tmp_path / "train.parquet"
    spec = load_feature_spec("full")
    summary = build_training_set(world, out, seq_len=2, features="full")
    t = pq.read_table(out)
    extras = [e.column for e in spec.extras()]
    assert t.column_names == TRAINING_SET_SCHEMA.names + extras
    assert t.schema.equals(training_set_schema(spec))
    assert summary["extra_columns"] == extras
    rows = t.to_pylist()
    assert rows[3]["price"] == 1.0 and rows[3]["price_bucket"] == 1.0  # item 10
    assert rows[3]["spu_id"] == 1
    # counts as of each row's ts (the stats snapshots are daily: none has passed yet)
    assert rows[3]["n_clicks"] == 0.0 and rows[6]["n_impressions"] == 0.0
    # the ids spec keeps exactly today's columns
    build_training_set(world, tmp_path / "ids.parquet", seq_len=2, features="ids")
    assert pq.read_table(tmp_path / "ids.parquet").schema.equals(TRAINING_SET_SCHEMA)
