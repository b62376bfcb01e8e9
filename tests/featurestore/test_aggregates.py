"""The windowed aggregates (issue 24): daily snapshots that are point-in-time correct (an
event at t changes no row stamped <= t), checked by hand on a dozen events and against a
brute-force count on a random log; the user / item attribute tables."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from fs_data import T0

from moon_rec.featurestore.aggregates import (
    DayGrid,
    build_aggregate_tables,
    build_item_ctr,
    build_user_attributes,
    build_user_clicks,
    build_user_pair_clicks,
    train_prior,
)

TS = pa.timestamp("us", tz="UTC")
D = timedelta(days=1)
H = timedelta(hours=1)
US = 1_000_000


def _us(t: datetime) -> int:
    return int(t.timestamp() * US)


def items_table() -> pa.Table:
    return pa.table({
        "item_id": [10, 11, 12],
        "category_id": [5, 5, 6],
        "brand_id": [1, 2, 1],
        "launch_ts": pa.array([T0 - 10 * D] * 3, TS),
    })


def users_table() -> pa.Table:
    return pa.table({"user_id": [1, 2], "signup_ts": pa.array([T0 - 5 * D] * 2, TS)})


# (user, item, time): u1 clicks on days 0, 0, 2, 8 (exactly at the boundary T0 + 8d) and 40
LOG = [
    (1, 10, T0 + 10 * H),
    (1, 11, T0 + 12 * H),
    (1, 12, T0 + 2 * D + H),
    (1, 10, T0 + 8 * D),
    (2, 12, T0 + D + 5 * H),
    (1, 12, T0 + 40 * D),
]


def behaviours(log: list[tuple[int, int, datetime]]) -> pa.Table:
    return pa.table({
        "user_id": pa.array([u for u, _, _ in log], pa.int64()),
        "item_id": pa.array([i for _, i, _ in log], pa.int64()),
        "ts": pa.array([t for _, _, t in log], TS),
    })


def _rows(table: pa.Table, key: dict[str, int]) -> dict[datetime, dict[str, object]]:
    out = {}
    for row in table.to_pylist():
        if all(row[k] == v for k, v in key.items()):
            out[row["event_timestamp"]] = row
    return out


def test_user_clicks_by_hand() -> None:
    rows = _rows(build_user_clicks(behaviours(LOG), users_table()), {"user_id": 1})
    # rows where a window changes: an event enters (day + 1) or leaves (day + 7 + 1,
    # day + 30 + 1); none after the horizon (the day after the log's last event, 41)
    days = [1, 3, 8, 9, 10, 16, 31, 33, 39, 41]
    assert sorted(rows) == [T0 - 5 * D] + [T0 + d * D for d in days]
    got = {(t - T0) // D: (r["user_clicks_7d"], r["user_clicks_30d"], r["user_last_click_ts"])
           for t, r in rows.items()}
    assert got[-5] == (0, 0, None)  # the base row at signup
    assert got[1] == (2, 2, T0 + 12 * H)
    assert got[3] == (3, 3, T0 + 2 * D + H)
    # the click at exactly T0 + 8d is in no row stamped <= T0 + 8d
    assert got[8] == (1, 3, T0 + 2 * D + H)
    assert got[9] == (2, 4, T0 + 8 * D)
    assert got[10] == (1, 4, T0 + 8 * D)
    assert got[16] == (0, 4, T0 + 8 * D)
    assert got[31] == (0, 2, T0 + 8 * D)
    assert got[33] == (0, 1, T0 + 8 * D)
    assert got[39] == (0, 0, T0 + 8 * D)
    assert got[41] == (1, 1, T0 + 40 * D)


def test_user_category_and_brand_shares_by_hand() -> None:
    cat = build_user_pair_clicks(behaviours(LOG), items_table(), "category")
    c5 = {(t - T0) // D: (r["user_category_clicks_7d"], r["user_category_share_7d"],
                          r["user_category_clicks_30d"], r["user_category_share_30d"])
          for t, r in _rows(cat, {"user_id": 1, "target_category_id": 5}).items()}
    assert c5[1] == (2, 1.0, 2, 1.0)
    assert c5[3] == (2, pytest.approx(2 / 3), 2, pytest.approx(2 / 3))
    assert c5[8] == (0, 0.0, 2, pytest.approx(2 / 3))
    assert c5[9] == (1, 0.5, 3, 0.75)
    # the pair's rows end when its last click (day 8) leaves the 30-day window
    assert max(c5) == 39 and c5[39] == (0, 0.0, 0, 0.0)
    c6 = {(t - T0) // D: (r["user_category_clicks_7d"], r["user_category_share_7d"])
          for t, r in _rows(cat, {"user_id": 1, "target_category_id": 6}).items()}
    assert min(c6) == 3 and c6[3] == (1, pytest.approx(1 / 3)) and c6[41] == (1, 1.0)
    brand = build_user_pair_clicks(behaviours(LOG), items_table(), "brand")
    b1 = {(t - T0) // D: (r["user_brand_clicks_30d"], r["user_brand_share_30d"])
          for t, r in _rows(brand, {"user_id": 1, "target_brand_id": 1}).items()}
    assert b1[1] == (1, 0.5) and b1[3] == (2, pytest.approx(2 / 3)) and b1[9] == (3, 0.75)
    u2 = _rows(brand, {"user_id": 2})
    assert [(r["target_brand_id"], (t - T0) // D, r["user_brand_share_7d"])
            for t, r in sorted(u2.items())][:2] == [(1, 2, 1.0), (1, 9, 0.0)]


def test_item_ctr_with_the_train_prior_by_hand() -> None:
    imp = pa.table({
        "item_id": pa.array([10, 10, 10, 10, 10, 11], pa.int64()),
        "ts": pa.array([T0 + H, T0 + 2 * H, T0 + 3 * H, T0 + D + H, T0 + D + 2 * H,
                        T0 + 3 * H], TS),
        "clicked": pa.array([1, 0, 0, 1, 1, 0], pa.int8()),
    })
    prior = train_prior(imp, _us(T0 + D))  # 6 train impressions ... 4 before T0 + 1d: 1 click
    assert prior["prior_ctr"] == pytest.approx(1 / 4)
    a, b = 20 / 4, 20 * 3 / 4
    assert (prior["prior_a"], prior["prior_b"]) == (pytest.approx(a), pytest.approx(b))
    table = build_item_ctr(imp, items_table(), prior)
    r10 = {(t - T0) // D: r for t, r in _rows(table, {"item_id": 10}).items()}
    assert (r10[1]["item_impressions_7d"], r10[1]["item_clicks_7d"]) == (3, 1)
    assert r10[1]["item_ctr_7d"] == pytest.approx((1 + a) / (3 + a + b))
    assert (r10[2]["item_impressions_30d"], r10[2]["item_clicks_30d"]) == (5, 3)
    assert r10[2]["item_ctr_30d"] == pytest.approx((3 + a) / (5 + a + b))
    assert r10[-10]["item_ctr_7d"] == pytest.approx(0.25)  # launch row: the prior mean
    # item 12 has no impression: its launch row only
    assert list(_rows(table, {"item_id": 12})) == [T0 - 10 * D]
    meta = table.schema.metadata
    assert float(meta[b"prior_a"]) == pytest.approx(a)
    assert meta[b"prior_from"] == b"impressions before train_end_ts"


def _random_log(rng: np.random.Generator, n: int) -> pa.Table:
    return pa.table({
        "user_id": pa.array(rng.integers(0, 6, n), pa.int64()),
        "item_id": pa.array(rng.choice([10, 11, 12], n), pa.int64()),
        # some exactly on a day boundary
        "ts": pa.array(_us(T0) + np.where(rng.random(n) < 0.2, rng.integers(0, 70, n) * 86_400,
                                          rng.integers(0, 70 * 86_400, n)) * US, pa.int64())
        .cast(TS),
    })


def _brute(log: pa.Table, stamp: int, window_days: int, **key: int) -> int:
    items = items_table().to_pylist()
    cat = {r["item_id"]: r for r in items}
    n = 0
    for r in log.to_pylist():
        t = _us(r["ts"])
        it = cat[r["item_id"]]
        if r["user_id"] == key["user_id"] and all(it[k.removeprefix("target_")] == v
                                                   for k, v in key.items() if k != "user_id"):
            n += stamp - window_days * 86_400 * US <= t < stamp
    return n


def test_aggregates_match_a_brute_force_count_at_any_time() -> None:
    rng = np.random.default_rng(0)
    log = _random_log(rng, 200)
    tables = build_aggregate_tables(items_table(), pa.table({
        "user_id": pa.array(range(6), pa.int64()),
        "signup_ts": pa.array([T0 - D] * 6, TS)}), log, None)
    horizon = max(_us(t) for t in log.column("ts").to_pylist()) // (86_400 * US) + 1
    for q in rng.integers(_us(T0), horizon * 86_400 * US, 40):  # request times
        boundary = int(q) // (86_400 * US) * 86_400 * US  # what a daily snapshot holds
        user, cat = int(rng.integers(0, 6)), int(rng.choice([5, 6]))
        for table, key, field in (
            (tables.user_clicks, {"user_id": user}, "user_clicks"),
            (tables.user_category_clicks, {"user_id": user, "target_category_id": cat},
             "user_category_clicks"),
        ):
            rows = [(_us(t), r) for t, r in _rows(table, key).items() if _us(t) <= q]
            as_of = max(rows, key=lambda x: x[0])[1] if rows else None  # Feast's as-of row
            for w in (7, 30):
                want = _brute(log, boundary, w, **key)
                assert (as_of[f"{field}_{w}d"] if as_of else 0) == want, (key, q, w)


def test_an_event_at_t_changes_no_row_stamped_at_or_before_t() -> None:
    rng = np.random.default_rng(1)
    log = _random_log(rng, 150)
    users = pa.table({"user_id": pa.array(range(6), pa.int64()),
                      "signup_ts": pa.array([T0 - D] * 6, TS)})
    full = build_aggregate_tables(items_table(), users, log, None)
    ts = np.array([_us(t) for t in log.column("ts").to_pylist()])
    for t in rng.choice(ts, 8):
        before = build_aggregate_tables(items_table(), users, log.filter(pa.array(ts < t)),
                                        None)
        for name in ("user_clicks", "user_category_clicks", "user_brand_clicks"):
            a, b = (getattr(x, name) for x in (full, before))
            keep_a = a.filter(pa.array([_us(s) <= t for s in a.column("event_timestamp")
                                        .to_pylist()]))
            keep_b = b.filter(pa.array([_us(s) <= t for s in b.column("event_timestamp")
                                        .to_pylist()]))
            assert keep_a.to_pylist() == keep_b.to_pylist(), (name, t)


def test_attributes_with_and_without_extra_columns() -> None:
    users = users_table().append_column("age", pa.array([31, None], pa.int64())) \
        .append_column("gender", pa.array(["f", "m"])) \
        .append_column("oracle_taste", pa.array([0.1, 0.2]))
    attrs = build_user_attributes(users)
    assert attrs.column_names == ["user_id", "event_timestamp", "signup_ts", "age", "gender"]
    assert attrs.column("age").to_pylist() == [31, None]
    plain = build_aggregate_tables(items_table(), users_table(), behaviours(LOG), None)
    assert plain.user_attributes.column_names == ["user_id", "event_timestamp", "signup_ts"]
    assert plain.item_extra_attributes is None
    extra = build_aggregate_tables(
        items_table().append_column("colour_group", pa.array(["red", "blue", "red"])),
        users_table(), behaviours(LOG), None)
    assert extra.item_extra_attributes is not None
    assert extra.item_extra_attributes.column_names == ["item_id", "event_timestamp",
                                                        "colour_group"]


def test_an_empty_log_builds_empty_aggregates() -> None:
    empty = behaviours([])
    tables = build_aggregate_tables(items_table(), users_table(), empty, None)
    assert tables.user_category_clicks.num_rows == 0
    assert tables.user_clicks.num_rows == 2  # the signup rows
    assert tables.item_ctr.num_rows == 3  # the launch rows, CTR = prior mean (0 here)
    assert DayGrid.of([np.zeros(0, np.int64)]) is None


def test_entity_rows_get_their_target_keys() -> None:
    from moon_rec.data.errors import DataError
    from moon_rec.featurestore.aggregates import with_target_keys

    rows = pa.table({"user_id": [1, 2], "item_id": pa.array([11, 12], pa.int64())})
    out = with_target_keys(rows, items_table())
    assert out.column("target_category_id").to_pylist() == [5, 6]
    assert out.column("target_brand_id").to_pylist() == [2, 1]
    with pytest.raises(DataError, match="row 1: id 99 is not in items"):
        with_target_keys(pa.table({"item_id": pa.array([10, 99], pa.int64())}), items_table())


def test_an_extra_column_named_like_the_time_column_is_refused() -> None:
    from moon_rec.data.errors import DataError

    users = users_table().append_column("event_timestamp", pa.array([1, 2], pa.int64()))
    with pytest.raises(DataError, match="users: column 'event_timestamp'"):
        build_user_attributes(users)
