"""The aggregate and attribute views in Feast (issue 24), on both profiles (embedded
always; production with ``-m services``): applied, point-in-time joined by the DuckDB
offline store (compound user x category keys), materialized and read back online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from fs_data import T0
from test_aggregates import LOG, behaviours, items_table, users_table

from moon_rec.data.io import write_table
from moon_rec.featurestore.aggregates import build_aggregate_tables
from moon_rec.featurestore.layout import (
    AGGREGATE_VIEWS,
    ITEM_EXTRA_ATTRIBUTES_VIEW,
    USER_ATTRIBUTES_VIEW,
    FeatureDataPaths,
)

D = pd.Timedelta(days=1)
TS = pa.timestamp("us", tz="UTC")


def _write(data: Path, *, extras: bool) -> None:
    items, users = items_table(), users_table()
    if extras:
        items = items.append_column("colour_group", pa.array(["red", "blue", "red"]))
        users = (users.append_column("age", pa.array([31, None], pa.int64()))
                 .append_column("gender", pa.array(["f", "m"]))
                 .append_column("score", pa.array([0.5, 1.5]))
                 .append_column("vip", pa.array([True, False])))
    imp = pa.table({"item_id": pa.array([10, 10, 11], pa.int64()),
                    "ts": pa.array([T0 + 35 * D, T0 + 36 * D, T0 + 37 * D], TS),
                    "clicked": pa.array([1, 0, 1], pa.int8())})
    tables = build_aggregate_tables(items, users, behaviours(LOG), imp)
    paths = FeatureDataPaths.from_dir(data)
    for view in AGGREGATE_VIEWS:
        t = getattr(tables, view)
        if t is not None:
            write_table(t, paths.table(view))


def _online(mfs: Any, refs: list[str], rows: list[dict[str, int]]) -> dict[str, list[Any]]:
    return mfs.store.get_online_features(features=refs, entity_rows=rows).to_dict()


def test_views_apply_join_point_in_time_and_read_back_online(
    make_store: Any, tmp_path: Path
) -> None:
    from moon_rec.featurestore.materialize import aggregate_views_to_load, materialize_views

    _write(tmp_path / "data", extras=True)
    mfs = make_store()
    views = {v.name: v for v in mfs.store.list_feature_views()}
    assert set(AGGREGATE_VIEWS) <= set(views)
    assert {f.name: str(f.dtype) for f in views[USER_ATTRIBUTES_VIEW].features} == {
        "signup_ts": "UnixTimestamp", "age": "Int64", "gender": "String", "score": "Float64",
        "vip": "Bool"}
    assert [f.name for f in views[ITEM_EXTRA_ATTRIBUTES_VIEW].features] == ["colour_group"]
    assert float(views["item_ctr"].tags["prior_ctr"]) == pytest.approx(2 / 3)
    # the point-in-time join: a request at exactly T0 + 8d does not see the click at T0 + 8d
    entity = pd.DataFrame({"user_id": [1, 1, 1], "target_category_id": [5, 5, 6],
                           "event_timestamp": [T0 + 8 * D, T0 + 9 * D + pd.Timedelta(hours=3),
                                               T0 + 2 * D]})
    hist = mfs.store.get_historical_features(
        entity_df=entity,
        features=["user_category_clicks:user_category_clicks_7d",
                  "user_category_clicks:user_category_share_30d", "user_clicks:user_clicks_30d"],
    ).to_df().sort_values("event_timestamp")
    got = hist[["target_category_id", "user_category_clicks_7d", "user_category_share_30d",
                "user_clicks_30d"]].to_numpy().tolist()
    assert got[0][0] == 6 and pd.isna(got[0][1])  # no click on category 6 before day 3
    assert got[1] == [5, 0, pytest.approx(2 / 3), 3]
    assert got[2] == [5, 1, 0.75, 4]
    # online: the newest snapshot (the horizon, T0 + 41d) of each key
    assert aggregate_views_to_load(mfs) == list(AGGREGATE_VIEWS)
    materialize_views(mfs, aggregate_views_to_load(mfs), end=T0 + 100 * D)
    on = _online(mfs, ["user_category_clicks:user_category_share_7d",
                       "user_brand_clicks:user_brand_clicks_30d", "user_clicks:user_clicks_7d",
                       "user_clicks:user_last_click_ts", "user_attributes:age",
                       "user_attributes:gender"],
                 [{"user_id": 1, "target_category_id": 6, "target_brand_id": 1},
                  {"user_id": 2, "target_category_id": 5, "target_brand_id": 2}])
    assert on["user_category_share_7d"] == [1.0, None]
    assert on["user_brand_clicks_30d"] == [1, None]
    assert on["user_clicks_7d"] == [1, 0]
    assert pd.Timestamp(on["user_last_click_ts"][0]) == T0 + 40 * D
    assert on["age"] == [31, None] and on["gender"] == ["f", "m"]
    items = _online(mfs, ["item_ctr:item_impressions_30d", "item_ctr:item_ctr_30d",
                          "item_extra_attributes:colour_group"],
                    [{"item_id": 10}, {"item_id": 12}])
    a, b = 20 * 2 / 3, 20 / 3
    assert items["item_impressions_30d"] == [2, 0]
    assert items["item_ctr_30d"] == [pytest.approx((1 + a) / (2 + a + b)), pytest.approx(2 / 3)]
    assert items["colour_group"] == ["red", "red"]


def test_a_world_without_extra_columns_gets_no_extra_fields(
    make_store: Any, tmp_path: Path
) -> None:
    from moon_rec.featurestore.materialize import aggregate_views_to_load, materialize_views

    _write(tmp_path / "data", extras=False)
    mfs = make_store()
    views = {v.name: v for v in mfs.store.list_feature_views()}
    assert ITEM_EXTRA_ATTRIBUTES_VIEW not in views
    assert [f.name for f in views[USER_ATTRIBUTES_VIEW].features] == ["signup_ts"]
    assert ITEM_EXTRA_ATTRIBUTES_VIEW not in aggregate_views_to_load(mfs)
    materialize_views(mfs, aggregate_views_to_load(mfs), end=T0 + 100 * D)
    on = _online(mfs, ["user_attributes:signup_ts"], [{"user_id": 2}])
    assert pd.Timestamp(on["signup_ts"][0]) == T0 - 5 * D


def test_the_target_keys_do_not_collide_with_item_attribute_fields(
    make_store: Any, tmp_path: Path
) -> None:
    """A ranker reads item_attributes:category_id and the user x category share of the same
    item in one call: the views' join keys (target_category_id) are no field of another
    view, so neither Feast path breaks (a join key ``category_id`` would: "Duplicate
    column name" offline, the field's value overwriting the key online)."""
    from moon_rec.featurestore.materialize import materialize_views
    from moon_rec.featurestore.tables import build_item_features

    data = tmp_path / "data"
    _write(data, extras=False)
    items = items_table().append_column("spu_id", pa.array([1, 2, 3], pa.int64())) \
        .append_column("price", pa.array([1.0, 2.0, 3.0]))
    write_table(build_item_features(items, behaviours(LOG).append_column(
        "action", pa.array(["click"] * len(LOG)))), data / "item_features.parquet")
    mfs = make_store()
    refs = ["item_attributes:category_id", "item_attributes:brand_id",
            "user_category_clicks:user_category_share_30d",
            "user_brand_clicks:user_brand_share_30d"]
    entity = pd.DataFrame({"user_id": [1], "item_id": [10], "target_category_id": [5],
                           "target_brand_id": [1], "event_timestamp": [T0 + 9 * D]})
    hist = mfs.store.get_historical_features(entity_df=entity, features=refs).to_df()
    row = hist.iloc[0]
    assert (row["category_id"], row["brand_id"]) == (5, 1)
    assert row["user_category_share_30d"] == 0.75 and row["user_brand_share_30d"] == 0.75
    materialize_views(mfs, ["item_attributes", "user_category_clicks", "user_brand_clicks"],
                      end=T0 + 100 * D)
    on = _online(mfs, refs, [{"user_id": 1, "item_id": 11, "target_category_id": 5,
                              "target_brand_id": 2}])
    assert (on["category_id"], on["brand_id"], on["target_category_id"]) == ([5], [2], [5])


def _shift_times(path: Path, by: pd.Timedelta) -> None:
    """Move every timestamp column of the parquet table at ``path`` by ``by``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    for i, f in enumerate(t.schema):
        if pa.types.is_timestamp(f.type):
            moved = pc.add(t.column(i), pa.scalar(by.to_pytimedelta(), pa.duration("us")))
            t = t.set_column(i, f, pc.cast(moved, f.type))
    pq.write_table(t, path)


def test_a_world_decades_old_is_materialized_from_its_first_event(
    make_store: Any, tmp_path: Path
) -> None:
    """A MovieLens-era world (events in 1997, older than the views' ten-year ttl): the
    default materialization window starts at the source's first event, not at now - ttl,
    so the online views hold its values (they were empty before)."""
    from moon_rec.featurestore.materialize import (
        aggregate_views_to_load,
        materialize_views,
        source_start,
    )
    from moon_rec.featurestore.tables import build_item_features

    data = tmp_path / "data"
    _write(data, extras=True)
    items = items_table().append_column("spu_id", pa.array([1, 2, 3], pa.int64())) \
        .append_column("price", pa.array([1.0, 2.0, 3.0]))
    write_table(build_item_features(items, behaviours(LOG).append_column(
        "action", pa.array(["click"] * len(LOG)))), data / "item_features.parquet")
    back = pd.Timestamp("1997-06-01", tz="UTC") - T0  # about 29 years back
    for f in data.glob("*.parquet"):
        _shift_times(f, back)
    mfs = make_store()
    assert source_start(mfs.store.get_feature_view(USER_ATTRIBUTES_VIEW)) == \
        T0 - 5 * D + back  # the users' signup
    reports = materialize_views(mfs, ["item_attributes", *aggregate_views_to_load(mfs)])
    assert all(r.start is not None and r.start.year == 1997 for r in reports)
    on = _online(mfs, ["user_clicks:user_clicks_7d", "user_clicks:user_last_click_ts",
                       "user_attributes:age", "user_attributes:gender",
                       "user_category_clicks:user_category_share_7d"],
                 [{"user_id": 1, "target_category_id": 6}, {"user_id": 2, "target_category_id": 5}])
    assert on["user_clicks_7d"] == [1, 0]
    assert pd.Timestamp(on["user_last_click_ts"][0]) == T0 + 40 * D + back
    assert on["age"] == [31, None] and on["gender"] == ["f", "m"]
    assert on["user_category_share_7d"] == [1.0, None]
    items_on = _online(mfs, ["item_attributes:category_id", "item_ctr:item_impressions_30d",
                             "item_extra_attributes:colour_group"], [{"item_id": 10}])
    assert items_on["category_id"] == [5] and items_on["item_impressions_30d"] == [2]
    assert items_on["colour_group"] == ["red"]
