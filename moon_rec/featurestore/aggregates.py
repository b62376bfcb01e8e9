"""Batch job: point-in-time windowed aggregates and entity attributes for the Feast views.

Pure pyarrow/numpy (no Feast, no Python loop over rows). Every table here is a feature
table of one view (``moon_rec.featurestore.definitions``), one row per (entity key,
``event_timestamp``).

The point-in-time rule: a row stamped ``t`` summarises only events strictly before ``t``,
and an event at ``t`` changes no row stamped ``<= t``. The windowed aggregates are built
as **daily snapshots**, the standard production construction: a row stamped at the day
boundary ``D`` (UTC epoch grid, ``every`` = 1 day) holds the window ``[D - w, D)`` for
``w`` = 7 and 30 days. Feast's as-of join (feature time <= entity time) then gives an
impression at ``t`` the snapshot of the last boundary ``<= t``: events of the same day
before ``t`` are not seen (a day of staleness, exactly what a nightly job serves online),
events at or after ``t`` never are. Why daily rather than event-exact rows: a sliding
window also changes when an event *leaves* it, and a share per (user, category) changes
whenever the user's total does, so event-exact rows multiply by the user's categories at
every event; on the day grid the rows are bounded by (keys x days), and the online value
after a nightly materialization is the very value training saw for that day (no
training/serving skew).

Rows are written only at the boundaries where a value changes (an event enters or leaves
a window), so the as-of row is always the right one; a key with no row yet has had no event
(counts 0, share 0). No snapshot is stamped after the log's horizon (the first boundary
after its last event): the log says nothing about later days.

Tables (``AGGREGATE_WINDOWS`` = 7, 30 days; ``{w}`` below):
- ``user_clicks`` (user_id): user_clicks_{w}d, user_last_click_ts (the time of the user's
  last click strictly before the row's time; null before the first; recency at a request
  = request ts - user_last_click_ts, computed by the consumer). A base row at
  ``signup_ts`` (zeros) when it precedes the first snapshot.
- ``user_category_clicks`` (user_id, target_category_id) and ``user_brand_clicks``
  (user_id, target_brand_id; the category / brand of a ranker row's target item):
  user_{category,brand}_clicks_{w}d and user_{category,brand}_share_{w}d (the
  key's clicks / the user's clicks in the window; 0 when the user has none).
- ``item_ctr`` (item_id): item_impressions_{w}d, item_clicks_{w}d (clicked impressions)
  and item_ctr_{w}d = (clicks + a) / (impressions + a + b), a Beta(a, b) prior with
  a = m p0 and b = m (1 - p0): p0 the global CTR of the train-period impressions (ts <
  ``train_end_ts`` of world.json; all impressions when the world has no split), m =
  ``prior_strength`` pseudo-impressions (20). a and b are in the table's schema metadata
  and the view's tags. A base row at ``launch_ts`` (zeros, CTR = p0).
- ``user_attributes`` (user_id, at ``signup_ts``): signup_ts plus every typed extra column
  of the users table; ``item_extra_attributes`` (item_id, at ``launch_ts``): the items'
  extra columns (no table when the items have none).

A "click" of the user tables is a behaviour row (any action: in the synthetic world each
behaviour is a clicked impression, deepened to cart / buy; in imported logs it is the
logged interaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.errors import DataError
from moon_rec.data.rows import RowIndex
from moon_rec.data.schemas import TABLES, TIMESTAMP
from moon_rec.featurestore.layout import (
    AGGREGATE_WINDOWS,
    TARGET_BRAND_KEY,
    TARGET_CATEGORY_KEY,
    TIMESTAMP_FIELD,
)

DAY = timedelta(days=1)
DEFAULT_PRIOR_STRENGTH = 20.0
PRIOR_KEYS = (b"prior_a", b"prior_b", b"prior_ctr", b"prior_strength", b"prior_from")


def user_click_fields() -> list[str]:
    return [f"user_clicks_{w}d" for w in AGGREGATE_WINDOWS]


def pair_fields(kind: str) -> tuple[list[str], list[str]]:
    """(count fields, share fields) of the user x ``kind`` (category | brand) table."""
    return ([f"user_{kind}_clicks_{w}d" for w in AGGREGATE_WINDOWS],
            [f"user_{kind}_share_{w}d" for w in AGGREGATE_WINDOWS])


def item_ctr_fields() -> tuple[list[str], list[str], list[str]]:
    """(impression, click, CTR) fields of the item table."""
    return ([f"item_impressions_{w}d" for w in AGGREGATE_WINDOWS],
            [f"item_clicks_{w}d" for w in AGGREGATE_WINDOWS],
            [f"item_ctr_{w}d" for w in AGGREGATE_WINDOWS])


def _schema(keys: list[str], ints: list[str], floats: list[str],
            stamps: tuple[str, ...] = ()) -> pa.Schema:
    return pa.schema(
        [pa.field(k, pa.int64(), nullable=False) for k in keys]
        + [pa.field(TIMESTAMP_FIELD, TIMESTAMP, nullable=False)]
        + [pa.field(f, pa.int64()) for f in ints]
        + [pa.field(f, pa.float64()) for f in floats]
        + [pa.field(f, TIMESTAMP) for f in stamps]
    )


USER_CLICKS_SCHEMA = _schema(["user_id"], user_click_fields(), [], ("user_last_click_ts",))
USER_CATEGORY_SCHEMA = _schema(["user_id", TARGET_CATEGORY_KEY], *pair_fields("category"))
USER_BRAND_SCHEMA = _schema(["user_id", TARGET_BRAND_KEY], *pair_fields("brand"))
_IMP, _CLK, _CTR = item_ctr_fields()
ITEM_CTR_SCHEMA = _schema(["item_id"], [x for pair in zip(_IMP, _CLK, strict=True)
                                        for x in pair], _CTR)


def _micros(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(col, TIMESTAMP).cast(pa.int64()).to_numpy(zero_copy_only=False),
                      dtype=np.int64)


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)


def _ts_array(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), pa.int64()).cast(TIMESTAMP)


@dataclass(frozen=True)
class DayGrid:
    """The snapshot grid: boundaries ``(first + d) * period`` for d in [0, horizon].

    Attributes:
        period: microseconds per snapshot period (a day).
        first: the day index of the earliest event.
        horizon: the last relative boundary index written (the first boundary after the
            log's last event).
        stride: > horizon + the longest window: the width of one key's day range in the
            composite (key, day) codes.
    """

    period: int
    first: int
    horizon: int
    stride: int

    @classmethod
    def of(cls, ts: list[np.ndarray], every: timedelta = DAY) -> DayGrid | None:
        """The grid of the events with times ``ts`` (microseconds); None: no event."""
        period = every // timedelta(microseconds=1)
        if period <= 0:
            raise ValueError("the snapshot period must be positive")
        nonempty = [t for t in ts if t.size]
        if not nonempty:
            return None
        if DAY % every:
            raise ValueError(f"the snapshot period must divide a day, got {every}")
        lo = min(int(t.min()) for t in nonempty) // period
        hi = max(int(t.max()) for t in nonempty) // period
        horizon = hi - lo + 1
        longest = max(AGGREGATE_WINDOWS) * (DAY // every)
        return cls(period=period, first=lo, horizon=horizon, stride=horizon + longest + 3)

    def windows(self) -> list[int]:
        """The windows (``AGGREGATE_WINDOWS`` days) in periods."""
        per_day = DAY // timedelta(microseconds=self.period)
        return [w * per_day for w in AGGREGATE_WINDOWS]

    def day(self, ts: np.ndarray) -> np.ndarray:
        """Relative index of the period holding each time."""
        return ts // self.period - self.first

    def stamp(self, d: np.ndarray) -> np.ndarray:
        """Microseconds of relative boundary ``d``."""
        return (d + self.first) * self.period


class WindowedEvents:
    """Events grouped by a dense key, sorted by (key, time), with windowed sums.

    Args:
        grid: the snapshot grid.
        key: [E] int64 dense key index (0..K-1).
        ts: [E] int64 event times (microseconds).
        weights: [E, M] the summed quantities (a column of ones counts events).
    """

    def __init__(self, grid: DayGrid, key: np.ndarray, ts: np.ndarray,
                 weights: np.ndarray) -> None:
        self.grid = grid
        day = grid.day(ts)
        code = key * grid.stride + day
        order = np.lexsort((ts, code))
        self.key, self.day, self.ts = key[order], day[order], ts[order]
        self.code = code[order]
        w = np.asarray(weights)[order]
        self.cum = np.vstack([np.zeros((1, w.shape[1]), dtype=w.dtype), np.cumsum(w, axis=0)])

    def change_codes(self) -> np.ndarray:
        """Sorted unique (key * stride + d) of every boundary d <= horizon where a window
        sum changes: the boundary after an event's day (it enters) and the one after
        its day + w (it leaves)."""
        g = self.grid
        days = [self.day + 1] + [self.day + w + 1 for w in g.windows()]
        d = np.concatenate(days)
        k = np.tile(self.key, len(days))
        keep = d <= g.horizon
        return np.unique(k[keep] * g.stride + d[keep])

    def sums(self, key: np.ndarray, d: np.ndarray, window: int) -> np.ndarray:
        """[Q, M] sums over the events of ``key`` in periods [d - window, d - 1], i.e.
        times in [D - w, D) for the boundary D of ``d``."""
        s = self.grid.stride
        hi = np.searchsorted(self.code, key * s + d, side="left")
        lo = np.searchsorted(self.code, key * s + d - window, side="left")
        return self.cum[hi] - self.cum[lo]

    def last_ts(self, key: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(times [Q], valid [Q]): the last event time of ``key`` strictly before the
        boundary of ``d``."""
        i = np.searchsorted(self.code, key * self.grid.stride + d, side="left") - 1
        safe = np.maximum(i, 0)
        valid = (i >= 0) & (self.key[safe] == key) if self.key.size else np.zeros(i.size, bool)
        ts = self.ts[safe] if self.ts.size else np.zeros(i.size, np.int64)
        return np.where(valid, ts, 0), valid


def _base_rows(keys: np.ndarray, stamps: np.ndarray, row_key: np.ndarray,
               row_ts: np.ndarray) -> np.ndarray:
    """Mask of the base rows (``keys`` at ``stamps``) that come strictly before their
    key's first snapshot row (rows ``row_key`` / ``row_ts`` sorted by key, time)."""
    first = np.searchsorted(row_key, keys, side="left")
    has = first < row_key.size
    has[has] = row_key[first[has]] == keys[has]
    first_ts = np.where(has, row_ts[np.minimum(first, max(row_ts.size - 1, 0))]
                        if row_ts.size else 0, np.iinfo(np.int64).max)
    return stamps < first_ts


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, dense index of each id)."""
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, inv.astype(np.int64)


def build_user_clicks(behaviors: pa.Table, users: pa.Table | None = None, *,
                      grid: DayGrid | None = None) -> pa.Table:
    """``user_clicks`` rows (``USER_CLICKS_SCHEMA``), see the module docstring.

    Args:
        behaviors: user_id, ts [B rows] (every row is a click).
        users: user_id, signup_ts (base rows); None: no base rows.
        grid: the snapshot grid (default: the behaviours').
    """
    u = _ints(behaviors, "user_id")
    ts = _micros(behaviors.column("ts"))
    grid = grid or DayGrid.of([ts])
    keys_out: list[np.ndarray] = []
    ts_out: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    last: list[np.ndarray] = []
    last_valid: list[np.ndarray] = []
    n_w = len(AGGREGATE_WINDOWS)
    if grid is not None and u.size:
        ids, k = _dense(u)
        ev = WindowedEvents(grid, k, ts, np.ones((u.size, 1), np.int64))
        codes = ev.change_codes()
        qk, qd = codes // grid.stride, codes % grid.stride
        keys_out.append(ids[qk])
        ts_out.append(grid.stamp(qd))
        counts.append(np.stack([ev.sums(qk, qd, w)[:, 0] for w in grid.windows()], axis=1))
        lt, lv = ev.last_ts(qk, qd)
        last.append(lt)
        last_valid.append(lv)
    if users is not None and users.num_rows:
        uid = _ints(users, "user_id")
        signup = _micros(users.column("signup_ts"))
        rk = keys_out[0] if keys_out else np.zeros(0, np.int64)
        rt = ts_out[0] if ts_out else np.zeros(0, np.int64)
        base = _base_rows(uid, signup, rk, rt)
        keys_out.append(uid[base])
        ts_out.append(signup[base])
        counts.append(np.zeros((int(base.sum()), n_w), np.int64))
        last.append(np.zeros(int(base.sum()), np.int64))
        last_valid.append(np.zeros(int(base.sum()), bool))
    if not keys_out:
        return USER_CLICKS_SCHEMA.empty_table()
    key, stamp = np.concatenate(keys_out), np.concatenate(ts_out)
    order = np.lexsort((stamp, key))
    c = np.concatenate(counts)[order]
    cols: dict[str, pa.Array] = {"user_id": pa.array(key[order]),
                                 TIMESTAMP_FIELD: _ts_array(stamp[order])}
    for j, name in enumerate(user_click_fields()):
        cols[name] = pa.array(c[:, j])
    lv = np.concatenate(last_valid)[order]
    cols["user_last_click_ts"] = pa.array(np.concatenate(last)[order], pa.int64(),
                                          mask=~lv).cast(TIMESTAMP)
    return pa.table(cols).cast(USER_CLICKS_SCHEMA)


def build_user_pair_clicks(behaviors: pa.Table, items: pa.Table, kind: str, *,
                           grid: DayGrid | None = None) -> pa.Table:
    """``user_{kind}_clicks`` rows (kind: ``category`` | ``brand``), see the module
    docstring: one row per (user, target_{kind}_id) at every boundary where the user's window
    changes, from the day after the pair's first click to the day its last click leaves
    the longest window (capped at the horizon).

    Args:
        behaviors: user_id, item_id, ts [B rows].
        items: item_id, {kind}_id (every behaviour's item must be in it).
    """
    if kind not in ("category", "brand"):
        raise ValueError(f"kind must be category or brand, got {kind!r}")
    schema = USER_CATEGORY_SCHEMA if kind == "category" else USER_BRAND_SCHEMA
    column = f"{kind}_id"  # of the items table
    key = TARGET_CATEGORY_KEY if kind == "category" else TARGET_BRAND_KEY
    u = _ints(behaviors, "user_id")
    ts = _micros(behaviors.column("ts"))
    grid = grid or DayGrid.of([ts])
    if grid is None or not u.size:
        return schema.empty_table()
    index = RowIndex(_ints(items, "item_id"))
    rows = index.require(_ints(behaviors, "item_id"), what="items", column="item_id",
                         file="behaviors")
    v = _ints(items, column)[rows]
    user_ids, uk = _dense(u)
    pairs, pk = np.unique(np.stack([uk, v], axis=1), axis=0, return_inverse=True)
    pk = pk.reshape(-1).astype(np.int64)
    ones = np.ones((u.size, 1), np.int64)
    user_ev = WindowedEvents(grid, uk, ts, ones)
    pair_ev = WindowedEvents(grid, pk, ts, ones)
    s = grid.stride
    user_codes = user_ev.change_codes()  # sorted (user, d)
    # each pair's live span of user boundaries: [first day + 1, last day + W + 1]
    first_i = np.searchsorted(pair_ev.key, np.arange(len(pairs)), side="left")
    last_i = np.searchsorted(pair_ev.key, np.arange(len(pairs)), side="right") - 1
    pu = pairs[:, 0]
    lo = np.searchsorted(user_codes, pu * s + pair_ev.day[first_i] + 1, side="left")
    end = np.minimum(pair_ev.day[last_i] + max(grid.windows()) + 1, grid.horizon)
    hi = np.searchsorted(user_codes, pu * s + end, side="right")
    n = hi - lo
    total = int(n.sum())
    row_pair = np.repeat(np.arange(len(pairs)), n)
    at = np.repeat(lo, n) + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))
    qd = user_codes[at] % s
    qu = pu[row_pair]
    counts, shares = [], []
    for w in grid.windows():
        c = pair_ev.sums(row_pair, qd, w)[:, 0]
        t = user_ev.sums(qu, qd, w)[:, 0]
        counts.append(c)
        shares.append(np.divide(c, t, out=np.zeros(total), where=t > 0))
    cnt_names, share_names = pair_fields(kind)
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(user_ids[qu]),
        key: pa.array(pairs[row_pair, 1]),
        TIMESTAMP_FIELD: _ts_array(grid.stamp(qd)),
    }
    for name, c in zip(cnt_names, counts, strict=True):
        cols[name] = pa.array(c)
    for name, x in zip(share_names, shares, strict=True):
        cols[name] = pa.array(x)
    return pa.table(cols).cast(schema)


def train_prior(impressions: pa.Table | None, train_end_us: int | None,
                strength: float = DEFAULT_PRIOR_STRENGTH) -> dict[str, float | str]:
    """The Beta prior of the item CTRs: p0 = the CTR of the impressions before
    ``train_end_us`` (all of them when None), a = m p0, b = m (1 - p0)."""
    if strength <= 0:
        raise ValueError(f"prior_strength must be > 0, got {strength}")
    clicked = np.zeros(0)
    if impressions is not None and impressions.num_rows:
        clicked = impressions.column("clicked").to_numpy(zero_copy_only=False).astype(float)
        if train_end_us is not None:
            clicked = clicked[_micros(impressions.column("ts")) < train_end_us]
    p0 = float(clicked.mean()) if clicked.size else 0.0
    return {"prior_ctr": p0, "prior_strength": float(strength), "prior_a": strength * p0,
            "prior_b": strength * (1.0 - p0),
            "prior_from": ("all impressions" if train_end_us is None
                           else "impressions before train_end_ts")}


def build_item_ctr(impressions: pa.Table | None, items: pa.Table, prior: dict[str, float | str],
                   *, grid: DayGrid | None = None) -> pa.Table:
    """``item_ctr`` rows (``ITEM_CTR_SCHEMA``), see the module docstring; ``prior`` from
    ``train_prior`` (recorded in the table's schema metadata).

    Args:
        impressions: item_id, ts, clicked [I rows] (None: no impressions).
        items: item_id, launch_ts (base rows).
    """
    a, b = float(prior["prior_a"]), float(prior["prior_b"])
    imp_names, clk_names, ctr_names = item_ctr_fields()
    n_w = len(AGGREGATE_WINDOWS)
    keys_out, ts_out, imps, clks = [], [], [], []
    if impressions is not None and impressions.num_rows:
        it = _ints(impressions, "item_id")
        ts = _micros(impressions.column("ts"))
        grid = grid or DayGrid.of([ts])
        assert grid is not None
        ids, k = _dense(it)
        w8 = np.stack([np.ones(it.size, np.int64), _ints(impressions, "clicked")], axis=1)
        ev = WindowedEvents(grid, k, ts, w8)
        codes = ev.change_codes()
        qk, qd = codes // grid.stride, codes % grid.stride
        keys_out.append(ids[qk])
        ts_out.append(grid.stamp(qd))
        sums = [ev.sums(qk, qd, w) for w in grid.windows()]
        imps.append(np.stack([x[:, 0] for x in sums], axis=1))
        clks.append(np.stack([x[:, 1] for x in sums], axis=1))
    iid = _ints(items, "item_id")
    launch = _micros(items.column("launch_ts"))
    base = _base_rows(iid, launch, keys_out[0] if keys_out else np.zeros(0, np.int64),
                      ts_out[0] if ts_out else np.zeros(0, np.int64))
    keys_out.append(iid[base])
    ts_out.append(launch[base])
    imps.append(np.zeros((int(base.sum()), n_w), np.int64))
    clks.append(np.zeros((int(base.sum()), n_w), np.int64))
    key, stamp = np.concatenate(keys_out), np.concatenate(ts_out)
    order = np.lexsort((stamp, key))
    im, cl = np.concatenate(imps)[order], np.concatenate(clks)[order]
    cols: dict[str, pa.Array] = {"item_id": pa.array(key[order]),
                                 TIMESTAMP_FIELD: _ts_array(stamp[order])}
    for j in range(n_w):
        cols[imp_names[j]] = pa.array(im[:, j])
        cols[clk_names[j]] = pa.array(cl[:, j])
    for j in range(n_w):
        cols[ctr_names[j]] = pa.array((cl[:, j] + a) / (im[:, j] + a + b))
    meta = {k: str(prior[k.decode()]).encode() for k in PRIOR_KEYS}
    return pa.table(cols).cast(ITEM_CTR_SCHEMA).replace_schema_metadata(meta)


def extra_columns(table: pa.Table, name: str) -> list[str]:
    """The typed extra columns of world table ``name`` (users | items) in ``table``:
    neither contract columns nor ``oracle_*``."""
    contract = {c.name for c in TABLES[name].columns}
    extras = [c for c in table.column_names if c not in contract and not c.startswith("oracle_")]
    if TIMESTAMP_FIELD in extras:
        raise DataError(f"extra column name '{TIMESTAMP_FIELD}' is the feature store's time "
                        "column; rename it", file=name, column=TIMESTAMP_FIELD)
    return extras


def build_user_attributes(users: pa.Table) -> pa.Table:
    """``user_attributes`` rows: user_id, event_timestamp = signup_ts, signup_ts and every
    extra column of the users table with its type."""
    extras = extra_columns(users, "users")
    signup = users.column("signup_ts").cast(TIMESTAMP)
    cols = {"user_id": users.column("user_id").cast(pa.int64()), TIMESTAMP_FIELD: signup,
            "signup_ts": signup, **{c: users.column(c) for c in extras}}
    return _sorted_by_key(pa.table(cols), "user_id", "users")


def build_item_extra_attributes(items: pa.Table) -> pa.Table | None:
    """``item_extra_attributes`` rows (item_id, event_timestamp = launch_ts, the items'
    extra columns), or None when the items have no extra column."""
    extras = extra_columns(items, "items")
    if not extras:
        return None
    cols = {"item_id": items.column("item_id").cast(pa.int64()),
            TIMESTAMP_FIELD: items.column("launch_ts").cast(TIMESTAMP),
            **{c: items.column(c) for c in extras}}
    return _sorted_by_key(pa.table(cols), "item_id", "items")


def _sorted_by_key(table: pa.Table, key: str, name: str) -> pa.Table:
    ids = _ints(table, key)
    uniq, first = np.unique(ids, return_index=True)
    if uniq.size != ids.size:
        dup = np.setdiff1d(np.arange(ids.size), first)[0]
        raise DataError(f"duplicate {key} {int(ids[dup])}", file=name, column=key, row=int(dup))
    return table.take(pa.array(np.argsort(ids, kind="stable")))


@dataclass(frozen=True)
class AggregateTables:
    """Every table of this module for one world (``item_extra_attributes`` None: the items
    have no extra column)."""

    user_clicks: pa.Table
    user_category_clicks: pa.Table
    user_brand_clicks: pa.Table
    item_ctr: pa.Table
    user_attributes: pa.Table
    item_extra_attributes: pa.Table | None


def build_aggregate_tables(
    items: pa.Table,
    users: pa.Table,
    behaviors: pa.Table,
    impressions: pa.Table | None,
    *,
    train_end_us: int | None = None,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    every: timedelta = DAY,
) -> AggregateTables:
    """Build the aggregate and attribute tables on one snapshot grid (the horizon: the
    first boundary after the last behaviour or impression).

    Args:
        items: item_id, category_id, brand_id, launch_ts (+ extra columns).
        users: user_id, signup_ts (+ extra columns).
        behaviors: user_id, item_id, ts.
        impressions: item_id, ts, clicked (None: the world has none).
        train_end_us: the train split's end (the CTR prior's period); None: all.
        prior_strength: m, the prior's pseudo-impressions.
        every: the snapshot period (a day; must divide it).
    """
    b_ts = _micros(behaviors.column("ts"))
    i_ts = (_micros(impressions.column("ts")) if impressions is not None
            else np.zeros(0, np.int64))
    grid = DayGrid.of([b_ts, i_ts], every)
    return AggregateTables(
        user_clicks=build_user_clicks(behaviors, users, grid=grid),
        user_category_clicks=build_user_pair_clicks(behaviors, items, "category", grid=grid),
        user_brand_clicks=build_user_pair_clicks(behaviors, items, "brand", grid=grid),
        item_ctr=build_item_ctr(impressions, items,
                                train_prior(impressions, train_end_us, prior_strength),
                                grid=grid),
        user_attributes=build_user_attributes(users),
        item_extra_attributes=build_item_extra_attributes(items),
    )


def with_target_keys(rows: pa.Table, items: pa.Table) -> pa.Table:
    """``rows`` (with ``item_id``) plus the join keys of the user x category / brand views:
    ``target_category_id`` / ``target_brand_id``, the category / brand of each row's item
    (from ``items``: item_id, category_id, brand_id), as a ranker's entity rows need them.

    Raises:
        DataError: naming the first row whose item is not in ``items``.
    """
    index = RowIndex(_ints(items, "item_id"))
    at = index.require(_ints(rows, "item_id"), what="items", column="item_id")
    out = rows
    for key, column in ((TARGET_CATEGORY_KEY, "category_id"), (TARGET_BRAND_KEY, "brand_id")):
        values = pa.array(_ints(items, column)[at])
        if key in out.column_names:
            out = out.set_column(out.schema.get_field_index(key), key, values)
        else:
            out = out.append_column(key, values)
    return out
