"""The offline feature tables behind the Feast views, built from world tables.

Pure pyarrow/numpy: no Feast here. Both tables are point-in-time safe by construction:
a row stamped ``t`` only summarises events strictly before ``t``, so Feast's as-of join
(feature time <= entity time) never lets an impression see its own or a later event.

- ``user_sequences``: per user and distinct behaviour time ``t_k``, one row stamped
  ``t_k + 1 us`` holding the last L behaviours with ``ts <= t_k`` (most recent first). For
  an impression at ``ts`` the as-of row is then the one of the last behaviour time
  ``< ts``: exactly the behaviours strictly before ``ts``.
- ``item_features``: per item, a row at ``launch_ts`` (attributes, zero counts) and one
  row per stats period boundary ``D`` after which the item had events, with cumulative
  counts of events with ``ts < D``.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.errors import DataError
from moon_rec.data.rows import RowIndex
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN, ITEM_STAT_FIELDS, TIMESTAMP_FIELD

_US = np.int64(1)
_DAY_US = np.int64(86_400_000_000)

USER_SEQUENCE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field(TIMESTAMP_FIELD, TIMESTAMP, nullable=False),
        pa.field("hist_item_ids", pa.list_(pa.int64())),
        pa.field("hist_category_ids", pa.list_(pa.int64())),
        pa.field("hist_actions", pa.list_(pa.string())),
        pa.field("hist_ts", pa.list_(TIMESTAMP)),
        pa.field("seq_len", pa.int64()),
    ]
)

ITEM_FEATURE_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field(TIMESTAMP_FIELD, TIMESTAMP, nullable=False),
        pa.field("category_id", pa.int64()),
        pa.field("brand_id", pa.int64()),
        pa.field("spu_id", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("launch_ts", TIMESTAMP),
        *(pa.field(f, pa.int64()) for f in ITEM_STAT_FIELDS),
    ]
)


def _micros(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(col, TIMESTAMP).cast(pa.int64()).to_numpy(zero_copy_only=False))


def _ts_array(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), pa.int64()).cast(TIMESTAMP)


def _category_lookup(items: pa.Table, item_ids: np.ndarray) -> np.ndarray:
    """category_id of each of ``item_ids`` (-1 where the item is unknown)."""
    index = RowIndex(items.column("item_id").to_numpy())
    return index.take(items.column("category_id").to_numpy(), item_ids, -1).astype(np.int64)


def build_user_sequences(
    behaviors: pa.Table, items: pa.Table, *, max_len: int = DEFAULT_SEQ_LEN
) -> pa.Table:
    """Behaviour sequence rows (``USER_SEQUENCE_SCHEMA``), see the module docstring.

    Args:
        behaviors: user_id, item_id, ts, action [B rows].
        items: item_id, category_id (for ``hist_category_ids``).
        max_len: L, the maximum sequence length.
    Returns:
        one row per (user, distinct behaviour ts), sorted by (user_id, event_timestamp);
        list columns of length <= L, most recent first.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = behaviors.num_rows
    if n == 0:
        return USER_SEQUENCE_SCHEMA.empty_table()
    users = behaviors.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64)
    ts = _micros(behaviors.column("ts"))
    order = np.lexsort((np.arange(n), ts, users))  # by user, then time, then file order
    users, ts = users[order], ts[order]
    item_ids = behaviors.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)[order]
    actions = behaviors.column("action").combine_chunks().take(pa.array(order))
    cats = _category_lookup(items, item_ids)

    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    # one output row per (user, ts): the last behaviour of each group
    last_of_group = np.ones(n, dtype=bool)
    last_of_group[:-1] = (users[1:] != users[:-1]) | (ts[1:] != ts[:-1])
    k = np.flatnonzero(last_of_group)
    start = np.maximum(user_start[k], k - max_len + 1)
    lengths = k - start + 1
    offsets = np.zeros(len(k) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # element j of row r is behaviour k_r - j (most recent first)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    gather = np.repeat(k, lengths) - within
    if offsets[-1] >= 2**31:
        raise ValueError("behaviour sequences too large for one table; lower max_len")
    off = pa.array(offsets.astype(np.int32))

    def lists(values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(off, values)

    table = pa.table(
        {
            "user_id": pa.array(users[k]),
            TIMESTAMP_FIELD: _ts_array(ts[k] + _US),
            "hist_item_ids": lists(pa.array(item_ids[gather])),
            "hist_category_ids": lists(pa.array(cats[gather])),
            "hist_actions": lists(actions.take(pa.array(gather))),
            "hist_ts": lists(_ts_array(ts[gather])),
            "seq_len": pa.array(lengths.astype(np.int64)),
        }
    )
    return table.cast(USER_SEQUENCE_SCHEMA)


def build_item_features(
    items: pa.Table,
    behaviors: pa.Table | None = None,
    impressions: pa.Table | None = None,
    *,
    stats_every: timedelta = timedelta(days=1),
) -> pa.Table:
    """Item attribute/statistics rows (``ITEM_FEATURE_SCHEMA``), see the module docstring.

    Args:
        items: item_id, category_id, brand_id, spu_id, price, launch_ts.
        behaviors: user_id, item_id, ts, action (click/cart/buy counts).
        impressions: item_id, ts, clicked (impression and impression-click counts).
        stats_every: the period of the statistics snapshots (boundaries on the epoch grid).
    Returns:
        rows sorted by (item_id, event_timestamp); counts cover events strictly before
        each row's ``event_timestamp``.
    """
    period = np.int64(stats_every // timedelta(microseconds=1))
    if period <= 0:
        raise ValueError("stats_every must be positive")
    item_ids = items.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    launch = _micros(items.column("launch_ts"))
    event_items: list[np.ndarray] = []
    event_ts: list[np.ndarray] = []
    event_counts: list[np.ndarray] = []  # [E, n_stats]
    n_stats = len(ITEM_STAT_FIELDS)
    if behaviors is not None and behaviors.num_rows:
        act = behaviors.column("action").to_numpy(zero_copy_only=False).astype(str)
        c = np.zeros((behaviors.num_rows, n_stats), dtype=np.int64)
        for j, a in enumerate(("click", "cart", "buy")):
            c[:, j] = act == a
        event_items.append(behaviors.column("item_id").to_numpy(zero_copy_only=False))
        event_ts.append(_micros(behaviors.column("ts")))
        event_counts.append(c)
    if impressions is not None and impressions.num_rows:
        c = np.zeros((impressions.num_rows, n_stats), dtype=np.int64)
        c[:, 3] = 1
        c[:, 4] = impressions.column("clicked").to_numpy(zero_copy_only=False).astype(np.int64)
        event_items.append(impressions.column("item_id").to_numpy(zero_copy_only=False))
        event_ts.append(_micros(impressions.column("ts")))
        event_counts.append(c)

    idx_of = {int(i): j for j, i in enumerate(item_ids.tolist())}
    if len(idx_of) != len(item_ids):
        raise DataError("duplicate item_id", file="items", column="item_id")
    snap_item = np.zeros(0, dtype=np.int64)
    snap_ts = np.zeros(0, dtype=np.int64)
    snap_counts = np.zeros((0, n_stats), dtype=np.int64)
    if event_items:
        e_item = np.concatenate(event_items).astype(np.int64)
        e_ts = np.concatenate(event_ts)
        e_c = np.concatenate(event_counts)
        unknown = [i for i in np.unique(e_item).tolist() if i not in idx_of]
        if unknown:
            raise DataError(f"events for unknown item_id {unknown[0]}", column="item_id")
        boundary = (e_ts // period + 1) * period  # first boundary strictly after the event
        key = np.lexsort((boundary, e_item))
        e_item, boundary, e_c = e_item[key], boundary[key], e_c[key]
        first = np.ones(len(e_item), dtype=bool)
        first[1:] = (e_item[1:] != e_item[:-1]) | (boundary[1:] != boundary[:-1])
        starts = np.flatnonzero(first)
        per_snapshot = np.add.reduceat(e_c, starts, axis=0)
        snap_item, snap_ts = e_item[starts], boundary[starts]
        new_item = np.ones(len(snap_item), dtype=bool)
        new_item[1:] = snap_item[1:] != snap_item[:-1]
        # cumulative sum within each item
        cum = np.cumsum(per_snapshot, axis=0)
        base_idx = np.maximum.accumulate(np.where(new_item, np.arange(len(snap_item)), 0))
        base = np.vstack([np.zeros((1, n_stats), dtype=np.int64), cum[:-1]])[base_idx]
        snap_counts = cum - base
    # launch rows, unless a snapshot has the same (item, ts)
    snap_keys = set(zip(snap_item.tolist(), snap_ts.tolist(), strict=True))
    keep_launch = np.array(
        [(int(i), int(t)) not in snap_keys for i, t in zip(item_ids, launch, strict=True)],
        dtype=bool,
    )
    all_item = np.concatenate([item_ids[keep_launch], snap_item])
    all_ts = np.concatenate([launch[keep_launch], snap_ts])
    all_counts = np.vstack(
        [np.zeros((int(keep_launch.sum()), n_stats), dtype=np.int64), snap_counts]
    )
    order = np.lexsort((all_ts, all_item))
    all_item, all_ts, all_counts = all_item[order], all_ts[order], all_counts[order]
    rows_of = np.array([idx_of[int(i)] for i in all_item.tolist()], dtype=np.int64)
    take = pa.array(rows_of)
    columns: dict[str, pa.Array] = {
        "item_id": pa.array(all_item),
        TIMESTAMP_FIELD: _ts_array(all_ts),
        "category_id": items.column("category_id").take(take),
        "brand_id": items.column("brand_id").take(take),
        "spu_id": items.column("spu_id").take(take),
        "price": items.column("price").take(take),
        "launch_ts": items.column("launch_ts").take(take),
    }
    for j, name in enumerate(ITEM_STAT_FIELDS):
        columns[name] = pa.array(all_counts[:, j])
    return pa.table(columns).cast(ITEM_FEATURE_SCHEMA)
