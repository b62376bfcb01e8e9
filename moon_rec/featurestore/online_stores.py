"""Online store plug-ins: Feast's SQLite and Redis stores with newest-wins writes.

Feast's ``SqliteOnlineStore`` upserts unconditionally, so an older-timestamp write (a late
push, a re-run of an old materialization) replaces newer data. ``MoonSqliteOnlineStore``
keeps Feast's table layout and read path and changes only the write: a row is replaced
only when the incoming event timestamp is strictly later (microsecond precision, kept in
an extra ``event_ts_us`` column because Feast stores whole seconds). That is the rule of
Feast's Redis store, which skips a write whose timestamp is not later than the stored one,
so both profiles behave the same. Every write path goes through ``online_write_batch``
(``materialize``, ``push``, ``write_to_online_store``) or, for our chunked writer, through
``write_encoded``: the same rows already serialised (``EncodedRows``), written with the
same bytes and the same rule but without a protobuf object per value.

Select it in ``feature_store.yaml`` with::

    online_store:
      type: moon_rec.featurestore.online_stores.MoonSqliteOnlineStore
      path: online.db

``MoonRedisOnlineStore`` keeps Feast's Redis layout and rule but does the compare-and-write
atomically in a server-side script, one call per few hundred entities (faster, and no
race between concurrent writers); the script is re-loaded when a restarted server has
forgotten it (NOSCRIPT), and the client has short timeouts and one immediate retry, so a
dead server fails a call in well under a second instead of after seconds of back-off.

Both stores also offer ``update_rows``: an atomic read-modify-write of entity rows across
any number of processes (SQLite: one ``BEGIN IMMEDIATE`` transaction; Redis: WATCH /
MULTI / EXEC, retried on conflict), for state that is appended to rather than replaced
(behaviour sequences: ``moon_rec.featurestore.push``), and an entity change log
(``log_changes`` / ``read_changes``: which int64 entities were written since a cursor,
each once), so that every process serving from the store can catch up with rows another
process wrote (new items in ``serving``'s embedding center).
"""

from __future__ import annotations

import itertools
import operator
import random
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, extract_text_and_num
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_US = "event_ts_us"
# bytes a read-modify-write keeps beside a row (Feast's readers never select it; plain
# writes leave it as it was, so whoever reads it back validates it against the row)
_EXTRA = "moon_extra"
_LOCK_INIT = threading.Lock()  # creates the stores' write locks

_LIST_KINDS = frozenset(
    f"{t}_list_val"
    for t in ("bytes", "string", "int32", "int64", "double", "float", "bool", "unix_timestamp")
)

WriteRow = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


@dataclass
class EncodedRows:
    """Rows of one feature view already in Feast's wire format: the bulk write path.

    ``online_write_batch`` takes one ``EntityKeyProto`` and a dict of ``ValueProto`` per
    entity, and every store serialises them again (a 1M x 480-float load spends most of
    its time building and serialising protobuf messages). A bulk writer that has the
    serialised values at hand (``materialize_embeddings`` assembles them with numpy) hands
    them over as they are; the stores below write exactly the bytes ``online_write_batch``
    would (tests compare both paths and read back through Feast).

    Attributes:
        join_key: the entity's single int64 join key (e.g. ``item_id``).
        ids: int64 [N] entity ids.
        values: feature name -> N serialised ``ValueProto`` messages.
        event_us: int64 [N] event times, microseconds since the epoch (UTC).
        texts: feature name -> N ``value_text`` strings (Feast's SQL stores keep scalar
            features as text too); list-valued features are absent.
        created: the created timestamp of every row (None: not recorded).
    """

    join_key: str
    ids: np.ndarray
    values: dict[str, Sequence[bytes]]
    event_us: np.ndarray
    texts: dict[str, Sequence[str | None]] = field(default_factory=dict)
    created: datetime | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def write_rows(self) -> list[WriteRow]:
        """The same rows as ``online_write_batch`` input (for any other store)."""
        parse = ValueProto.FromString
        names = list(self.values)
        cols = [[parse(v) for v in self.values[n]] for n in names]
        stamps: dict[int, datetime] = {}
        rows: list[WriteRow] = []
        for i, (item, us) in enumerate(zip(self.ids.tolist(), self.event_us.tolist(), strict=True)):
            ts = stamps.get(us)
            if ts is None:
                ts = stamps[us] = from_epoch_micros(us)
            key = EntityKeyProto(
                join_keys=[self.join_key], entity_values=[ValueProto(int64_val=item)]
            )
            rows.append(
                (key, {n: c[i] for n, c in zip(names, cols, strict=True)}, ts, self.created)
            )
        return rows


@dataclass
class OnlineRow:
    """One entity's row of a feature view, as ``update_rows`` reads and writes it.

    Attributes:
        values: feature name -> value (the features present in the store).
        event_us: the row's event time, microseconds since the epoch (0: unknown).
        extra: bytes kept beside the row for the writer (None: none); see ``_EXTRA``.
    """

    values: dict[str, ValueProto]
    event_us: int
    extra: bytes | None = None


RowUpdate = Callable[[int, "OnlineRow | None"], OnlineRow]
"""``update(i, stored)`` -> the new row of the i-th key; ``stored`` is None for an entity
without a row. It may be called more than once per key (a retried transaction), so it
must not have side effects."""


class StoreContention(RuntimeError):
    """A read-modify-write lost to concurrent writers too many times in a row."""


def serialized_int64_keys(join_key: str, ids: np.ndarray, version: int) -> list[bytes]:
    """``serialize_entity_key`` of N single-int64-key entities, assembled with numpy.

    The fixed prefix (key name, type tags, lengths) is taken from Feast's own function and
    checked against it with a second probe, so a future change of the format fails loudly
    instead of writing keys that Feast cannot find.
    """

    def feast_key(v: int) -> bytes:
        return serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=v)]),
            entity_key_serialization_version=version,
        )

    probe = 0x0102030405060708
    want = feast_key(probe)
    prefix = want[:-8]
    if prefix + struct.pack("<q", probe) != want or feast_key(-1) != prefix + b"\xff" * 8:
        raise RuntimeError(f"unexpected Feast entity key layout (version {version})")
    n = int(ids.shape[0])
    width = len(prefix) + 8
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix) :] = np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)
    raw = buf.tobytes()
    return [raw[i : i + width] for i in range(0, n * width, width)]


def _memcmp_order(ids: np.ndarray) -> np.ndarray | None:
    """The stable order that sorts N little-endian int64 keys bytewise (SQLite's BLOB
    order), or None when they already are in it."""
    k = np.ascontiguousarray(ids, dtype="<i8").view("<u8").byteswap()
    if k.size < 2 or bool(np.all(k[1:] >= k[:-1])):
        return None
    return np.argsort(k, kind="stable")


def epoch_micros(ts: datetime) -> int:
    """Microseconds since the epoch of ``ts`` (naive means UTC, as in Feast)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch (inverse of ``epoch_micros``)."""
    return _EPOCH + timedelta(microseconds=us)


def _feast_seconds(ts: datetime | None) -> int | None:
    # Feast stores naive-UTC datetimes through sqlite3's epoch adapter and reads them back
    # with datetime.fromtimestamp; store exactly what it would, so its reader agrees.
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return int(ts.timestamp())


def _key_serializer(version: int) -> Callable[[EntityKeyProto], bytes]:
    """``serialize_entity_key`` with a fast path for one int64 join key (every MOON entity).

    The fast path reuses the bytes Feast produces for the key name and swaps in the value,
    and is checked against Feast's own function once per call site.
    """
    cache: dict[str, bytes] = {}

    def serialize(key: EntityKeyProto) -> bytes:
        if len(key.join_keys) == 1 and key.entity_values[0].WhichOneof("val") == "int64_val":
            name = key.join_keys[0]
            prefix = cache.get(name)
            if prefix is None:
                probe = serialize_entity_key(key, entity_key_serialization_version=version)
                prefix = probe[:-8]
                if prefix + struct.pack("<q", key.entity_values[0].int64_val) != probe:
                    prefix = cache[name] = b""
                else:
                    cache[name] = prefix
            if prefix:
                return prefix + struct.pack("<q", key.entity_values[0].int64_val)
        return serialize_entity_key(key, entity_key_serialization_version=version)

    return serialize


class MoonSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """``SqliteOnlineStoreConfig`` plus WAL journaling; unknown keys are rejected."""

    type: Literal["moon_rec.featurestore.online_stores.MoonSqliteOnlineStore"] = (
        "moon_rec.featurestore.online_stores.MoonSqliteOnlineStore"  # type: ignore[assignment]
    )
    wal: bool = True
    """Journal in WAL mode with synchronous=NORMAL (readers never block the writer)."""
    cache_mb: int = 128
    """SQLite page cache per connection, MiB (the default 2 MiB thrashes on bulk loads)."""
    page_size: int = 16384
    """Page size of a new database file (rows of 256 floats fit a 16 KiB page well)."""
    busy_timeout_s: float = 2.0
    """How long a write waits for another process's write lock before it fails."""


class MoonSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store whose writes never replace newer data with older."""

    _checked_tables: set[str] | None = None
    _write_lock: threading.Lock | None = None

    def _lock(self) -> threading.Lock:
        """One write transaction at a time on the shared connection (threads of one
        process share it; a commit by one would end another's transaction)."""
        if self._write_lock is None:
            with _LOCK_INIT:
                if self._write_lock is None:
                    self._write_lock = threading.Lock()
        return self._write_lock

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            cfg = config.online_store
            busy_ms = int(1000 * float(getattr(cfg, "busy_timeout_s", 5.0)))
            conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if empty:  # the page size can only be chosen before the first table
                conn.execute(f"PRAGMA page_size={int(getattr(cfg, 'page_size', 4096))}")
            if getattr(cfg, "wal", False):
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={-1024 * int(getattr(cfg, 'cache_mb', 2))}")
        return conn

    def _ensure_ts_column(self, conn: sqlite3.Connection, table_name: str) -> None:
        if self._checked_tables is None:
            self._checked_tables = set()
        if table_name in self._checked_tables:
            return
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote_id(table_name)})")}
        if _TS_US not in cols:
            conn.execute(f"ALTER TABLE {_quote_id(table_name)} ADD COLUMN {_TS_US} INTEGER")
        if _EXTRA not in cols:
            conn.execute(f"ALTER TABLE {_quote_id(table_name)} ADD COLUMN {_EXTRA} BLOB")
        self._checked_tables.add(table_name)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        conn = self._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        for table in tables_to_keep:
            name = _table_id(config.project, table, versioning)
            self._ensure_ts_column(conn, name)
            # Feast adds an index on entity_key although the primary key (entity_key,
            # feature_name) already serves lookups by entity_key; a third b-tree to
            # maintain costs ~15% of bulk write time.
            conn.execute(f"DROP INDEX IF EXISTS {_quote_id(name + '_ek')}")
        conn.commit()

    @staticmethod
    def _upsert_sql(table_name: str) -> str:
        """One statement: insert, or replace only when the incoming row is strictly newer."""
        q = _quote_id(table_name)
        return (
            f"INSERT INTO {q} (entity_key, feature_name, value, value_text, event_ts, "
            f"created_ts, {_TS_US}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            f"created_ts = excluded.created_ts, {_TS_US} = excluded.{_TS_US} "
            f"WHERE excluded.{_TS_US} > COALESCE({q}.{_TS_US}, {q}.event_ts * 1000000)"
        )

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[WriteRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Upsert ``data`` where the incoming event time is strictly later than the stored.

        Args:
            data: (entity key, {feature name: value}, event time, created time) per entity.
            progress: called with the number of entities written.
        """
        if config.online_store.vector_enabled:
            raise ValueError(
                "online_store.vector_enabled is not supported by MoonSqliteOnlineStore "
                "(SQLite vector search does not work on this Python)"
            )
        conn = self._get_conn(config)
        table_name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        self._ensure_ts_column(conn, table_name)
        sql = self._upsert_sql(table_name)
        serialize = _key_serializer(config.entity_key_serialization_version)
        seconds_of: dict[datetime | None, int | None] = {None: None}
        kinds: dict[str, str] = {}

        rows: list[tuple[Any, ...]] = []
        for entity_key, values, ts, created in data:
            key = serialize(entity_key)
            seconds = seconds_of.get(ts)
            if seconds is None:
                seconds = seconds_of[ts] = _feast_seconds(ts)
            micros = epoch_micros(ts)
            created_s = seconds_of.get(created)
            if created_s is None and created is not None:
                created_s = seconds_of[created] = _feast_seconds(created)
            for name, val in values.items():
                # value_text holds scalars only (Feast's rule); a field's kind is fixed, so
                # decide once per field instead of inspecting every vector
                kind = kinds.get(name)
                if kind is None:
                    kind = val.WhichOneof("val")
                    if kind is not None:
                        kinds[name] = kind
                text = extract_text_and_num(val, False)[0] if kind not in _LIST_KINDS else None
                rows.append((key, name, val.SerializeToString(), text, seconds, created_s, micros))
        # Sorted keys turn random b-tree inserts into mostly sequential ones. The sort is
        # stable, so rows of one entity keep their order and newest-wins stays exact.
        rows.sort(key=lambda r: r[0])
        with self._lock(), conn:
            conn.executemany(sql, rows)
        if progress:
            progress(len(data))

    def write_encoded(self, config: RepoConfig, table: FeatureView, batch: EncodedRows) -> None:
        """``online_write_batch`` for rows already serialised (same bytes, same rule).

        The rows reach ``executemany`` through C-level iterators (no Python work per row),
        in key order so that a fresh table is appended to, in one transaction.
        """
        if config.online_store.vector_enabled:
            raise ValueError(
                "online_store.vector_enabled is not supported by MoonSqliteOnlineStore"
            )
        n = len(batch)
        if n == 0:
            return
        conn = self._get_conn(config)
        table_name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        self._ensure_ts_column(conn, table_name)
        sql = self._upsert_sql(table_name)
        keys = serialized_int64_keys(
            batch.join_key, batch.ids, config.entity_key_serialization_version
        )
        us = np.asarray(batch.event_us, dtype=np.int64)
        # the seconds exactly as online_write_batch stores them, once per distinct time
        distinct, inverse = np.unique(us, return_inverse=True)
        secs = np.array(
            [_feast_seconds(from_epoch_micros(int(u))) for u in distinct.tolist()], dtype=np.int64
        )[inverse.reshape(-1)]
        order = _memcmp_order(batch.ids)

        pick = operator.itemgetter(*order.tolist()) if order is not None and n > 1 else None

        def col(seq: Sequence[Any]) -> Sequence[Any]:
            return seq if pick is None else pick(seq)  # C-level gather

        created = _feast_seconds(batch.created)
        keys_o = col(keys)
        secs_o = col(secs.tolist())
        us_o = col(us.tolist())
        per_feature: list[Iterator[tuple[Any, ...]]] = []
        for name, vals in batch.values.items():
            if len(vals) != n:
                raise ValueError(f"feature {name}: {len(vals)} values for {n} entities")
            texts = batch.texts.get(name)
            per_feature.append(
                zip(
                    keys_o,
                    itertools.repeat(name),
                    col(vals),
                    col(texts) if texts is not None else itertools.repeat(None),
                    secs_o,
                    itertools.repeat(created),
                    us_o,
                    strict=False,
                )
            )
        # entity-major, features in the given order (as online_write_batch writes them)
        rows = itertools.chain.from_iterable(zip(*per_feature, strict=False))
        with self._lock(), conn:
            conn.executemany(sql, rows)

    def update_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        keys: Sequence[EntityKeyProto],
        update: RowUpdate,
    ) -> None:
        """Atomically replace the rows of ``keys`` by ``update(i, stored row)``.

        One ``BEGIN IMMEDIATE`` transaction holds the database's write lock from the read
        to the commit, so concurrent writers in any number of processes are serialised
        (each waits up to ``busy_timeout_s``) and none overwrites another's update. The
        new rows are written whatever their event time (the update decides it). A key
        repeated in ``keys`` sees its own earlier update.
        """
        if not keys:
            return
        conn = self._get_conn(config)
        table_name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        self._ensure_ts_column(conn, table_name)
        q = _quote_id(table_name)
        serialize = _key_serializer(config.entity_key_serialization_version)
        bkeys = [serialize(k) for k in keys]
        write = (
            f"INSERT INTO {q} (entity_key, feature_name, value, value_text, event_ts, "
            f"created_ts, {_TS_US}, {_EXTRA}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            f"created_ts = excluded.created_ts, {_TS_US} = excluded.{_TS_US}, "
            f"{_EXTRA} = excluded.{_EXTRA}"
        )
        with self._lock():
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored: dict[bytes, OnlineRow] = {}
                distinct = list(dict.fromkeys(bkeys))
                for s in range(0, len(distinct), 500):
                    part = distinct[s : s + 500]
                    cur = conn.execute(
                        f"SELECT entity_key, feature_name, value, {_TS_US}, {_EXTRA} FROM {q} "
                        f"WHERE entity_key IN ({','.join('?' * len(part))})",
                        part,
                    )
                    for ek, name, value, us, extra in cur:
                        row = stored.get(ek)
                        if row is None:
                            row = stored[ek] = OnlineRow({}, 0, None)
                        row.values[name] = ValueProto.FromString(value)
                        row.event_us = max(row.event_us, int(us or 0))
                        if row.extra is None and extra is not None:
                            row.extra = bytes(extra)
                out: list[tuple[Any, ...]] = []
                for i, ek in enumerate(bkeys):
                    new = update(i, stored.get(ek))
                    stored[ek] = new
                    seconds = _feast_seconds(from_epoch_micros(new.event_us))
                    for name, val in new.values.items():
                        kind = val.WhichOneof("val")
                        text = extract_text_and_num(val, False)[0] if kind not in _LIST_KINDS else None
                        out.append((ek, name, val.SerializeToString(), text, seconds, None,
                                    new.event_us, new.extra))
                conn.executemany(write, out)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    # -- the change log ----------------------------------------------------------------
    @staticmethod
    def _changes_table(config: RepoConfig) -> str:
        return _quote_id(f"{config.project}_moon_changes")

    def _ensure_changes(self, conn: sqlite3.Connection, config: RepoConfig) -> str:
        q = self._changes_table(config)
        if self._checked_tables is None:
            self._checked_tables = set()
        if q not in self._checked_tables:
            with self._lock(), conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {q} (view TEXT, entity_id INTEGER, "
                    "seq INTEGER, PRIMARY KEY(view, entity_id))"
                )
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote_id(f'{config.project}_moon_changes_seq')}"
                    f" ON {q} (view, seq)"
                )
            self._checked_tables.add(q)
        return q

    def log_changes(self, config: RepoConfig, table: FeatureView, ids: Sequence[int]) -> int:
        """Record that the rows of entity ``ids`` of ``table`` were written; returns the
        sequence number given to them (all processes share one increasing sequence)."""
        conn = self._get_conn(config)
        q = self._ensure_changes(conn, config)
        with self._lock():
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = int(conn.execute(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {q} WHERE view = ?", (table.name,)
                ).fetchone()[0]) + 1
                conn.executemany(
                    f"INSERT INTO {q} (view, entity_id, seq) VALUES (?, ?, ?) "
                    "ON CONFLICT(view, entity_id) DO UPDATE SET seq = excluded.seq",
                    [(table.name, int(i), seq) for i in ids],
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return seq

    def read_changes(
        self, config: RepoConfig, table: FeatureView, after: int, limit: int = 10_000
    ) -> tuple[list[int], int]:
        """(entity ids written after sequence number ``after``, each once, oldest first;
        the cursor to read on from), at most ``limit`` ids."""
        conn = self._get_conn(config)
        q = self._ensure_changes(conn, config)
        rows = conn.execute(
            f"SELECT entity_id, seq FROM {q} WHERE view = ? AND seq > ? ORDER BY seq LIMIT ?",
            (table.name, int(after), int(limit)),
        ).fetchall()
        if not rows:
            return [], int(after)
        return [int(r[0]) for r in rows], int(rows[-1][1])


# -- Redis ------------------------------------------------------------------------------

# Newest-wins write of many entities in one server-side call, atomically per entity (no
# read-then-write race between clients). ARGV: ts field, then per entity: seconds, nanos,
# the serialised Timestamp, the number of feature fields n, and n (field, value) pairs.
# The stored Timestamp is Feast's (a protobuf: 0x08 varint seconds, 0x10 varint nanos), so
# rows written by Feast's own Redis store compare correctly too. Returns rows written.
_REDIS_NEWEST_WINS = """
local function varint(s, i)
  local v, mul = 0, 1
  while true do
    local b = string.byte(s, i)
    if not b then return v, i end
    v = v + (b % 128) * mul
    i = i + 1
    if b < 128 then return v, i end
    mul = mul * 128
  end
end
local function parse_ts(s)
  local sec, nanos, i = 0, 0, 1
  while i <= #s do
    local tag = string.byte(s, i)
    local v
    v, i = varint(s, i + 1)
    if tag == 8 then sec = v elseif tag == 16 then nanos = v end
  end
  return sec, nanos
end
local ts_field = ARGV[1]
local ttl = tonumber(ARGV[2])
local a = 3
local written = 0
for k = 1, #KEYS do
  local sec, nanos = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local ts_bytes, n = ARGV[a + 2], tonumber(ARGV[a + 3])
  local prev = redis.call('HGET', KEYS[k], ts_field)
  local newer = true
  if prev then
    local ps, pn = parse_ts(prev)
    newer = (sec > ps) or (sec == ps and nanos > pn)
  end
  if newer then
    local args = {ts_field, ts_bytes}
    for j = 0, n - 1 do
      args[#args + 1] = ARGV[a + 4 + 2 * j]
      args[#args + 1] = ARGV[a + 5 + 2 * j]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    written = written + 1
  end
  a = a + 4 + 2 * n
end
return written
"""

# The change log: one increasing sequence per view, and a sorted set of entity ids scored
# by the sequence number of their last write. KEYS: the set, the counter; ARGV: the ids.
_REDIS_LOG_CHANGES = """
local seq = redis.call('INCR', KEYS[2])
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], seq, ARGV[i]) end
return seq
"""


class MoonRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """``RedisOnlineStoreConfig`` whose writes run as one atomic server-side script."""

    type: Literal["moon_rec.featurestore.online_stores.MoonRedisOnlineStore"] = (
        "moon_rec.featurestore.online_stores.MoonRedisOnlineStore"  # type: ignore[assignment]
    )
    script_batch: int = 500
    """Entities per script call (a call blocks the server while it runs)."""
    socket_timeout_s: float = 0.5
    """Read / write timeout of a server call (Redis answers in well under a millisecond
    on loopback; a hung server fails the call after this instead of blocking a request)."""
    connect_timeout_s: float = 0.25
    """Timeout of opening a connection."""
    retries: int = 1
    """Immediate retries of a call that failed on its connection (a restarted server
    leaves dead pooled connections: the retry reconnects), with no back-off (redis-py's
    default backs off for seconds)."""
    bulk_timeout_s: float = 120.0
    """Read / write timeout of bulk writes (materialization: many script calls streamed
    before the first reply is read), on a client of their own."""
    update_attempts: int = 200
    """Attempts of one ``update_rows`` transaction that concurrent writers keep
    invalidating before ``StoreContention``."""


class MoonRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis store with newest-wins writes done atomically by a Lua script.

    Feast's store reads the stored timestamps in one round trip and writes in a second,
    comparing in Python: a concurrent writer can slip in between, and the per-row Python
    work dominates bulk loads. Here each entity is compared and written inside Redis. The
    key layout (entity key + project, murmur3 field names, ``_ts:<view>`` Timestamp) is
    Feast's, so Feast's reads and ``feast serve`` work unchanged. Redis Cluster and
    ``skip_dedup`` fall back to Feast's implementation.
    """

    _script_sha: str | None = None
    _bulk: Any = None

    def _bulk_client(self, cfg: RedisOnlineStoreConfig) -> Any:
        """A client for bulk writes: the same server, a long timeout (a streamed load must
        not fail because the server took a while to drain it)."""
        if self._bulk is None:
            from redis import Redis

            nodes, kwargs = self._parse_connection_string(cfg.connection_string)
            kwargs["socket_timeout"] = float(getattr(cfg, "bulk_timeout_s", 120.0))
            kwargs.setdefault("socket_connect_timeout",
                              float(getattr(cfg, "connect_timeout_s", 0.25)))
            kwargs["host"], kwargs["port"] = nodes[0]["host"], nodes[0]["port"]
            self._bulk = Redis(**kwargs)
        return self._bulk

    def _get_client(self, online_store_config: RedisOnlineStoreConfig) -> Any:
        """Feast's client, with short timeouts and one immediate retry (see the config)."""
        cfg = online_store_config
        if self._client is None and cfg.redis_type == RedisType.redis:
            from redis import Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            nodes, kwargs = self._parse_connection_string(cfg.connection_string)
            kwargs.setdefault("socket_timeout", float(getattr(cfg, "socket_timeout_s", 0.5)))
            kwargs.setdefault("socket_connect_timeout",
                              float(getattr(cfg, "connect_timeout_s", 0.25)))
            kwargs.setdefault("retry", Retry(NoBackoff(), int(getattr(cfg, "retries", 1))))
            kwargs["host"], kwargs["port"] = nodes[0]["host"], nodes[0]["port"]
            self._client = Redis(**kwargs)
        return super()._get_client(cfg)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[WriteRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write ``data`` where the incoming event time is strictly later than the stored."""
        from redis.exceptions import NoScriptError

        cfg = config.online_store
        if cfg.redis_type != RedisType.redis or cfg.skip_dedup:
            super().online_write_batch(config, table, data, progress)
            return
        step = max(1, int(getattr(cfg, "script_batch", 500)))
        client = self._bulk_client(cfg) if len(data) > step else self._get_client(cfg)
        # register_script: a pipeline checks SCRIPT EXISTS and loads it first, so a server
        # restarted since the last call (which forgot every script) gets it back
        script = client.register_script(_REDIS_NEWEST_WINS)
        fv_name = _versioned_fv_name(table, config)
        ts_field = f"_ts:{fv_name}"
        serialize = _key_serializer(config.entity_key_serialization_version)
        project = config.project.encode("utf-8")
        fields: dict[str, bytes] = {}
        ttl = int(cfg.key_ttl_seconds or 0)
        calls: list[tuple[list[bytes], list[Any]]] = []
        for s in range(0, len(data), step):
            keys: list[bytes] = []
            argv: list[Any] = [ts_field, ttl]
            for entity_key, values, ts, _ in data[s : s + step]:
                keys.append(serialize(entity_key) + project)
                micros = epoch_micros(ts)
                sec, nanos = divmod(micros, 1_000_000)
                stamp = Timestamp(seconds=sec, nanos=nanos * 1000)
                argv += [sec, nanos * 1000, stamp.SerializeToString(), len(values)]
                for name, val in values.items():
                    f = fields.get(name)
                    if f is None:
                        f = fields[name] = _mmh3(f"{fv_name}:{name}")
                    argv += [f, val.SerializeToString()]
            calls.append((keys, argv))
        for attempt in range(2):
            try:
                with client.pipeline(transaction=False) as pipe:
                    for keys, argv in calls:
                        script(keys=keys, args=argv, client=pipe)
                    pipe.execute()
                break
            except NoScriptError:
                # the server restarted between the check and the call: newest-wins makes
                # a repeated write a no-op, so send everything again
                if attempt:
                    raise
        self._script_sha = script.sha
        if progress:
            progress(len(data))

    def update_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        keys: Sequence[EntityKeyProto],
        update: RowUpdate,
    ) -> None:
        """Atomically replace the rows of ``keys`` by ``update(i, stored row)``.

        Per entity: WATCH the key, read its fields, compute the new row, and write it in
        MULTI / EXEC, which fails when another client changed the key in between; then
        it is read again and retried (``update_attempts``), so no concurrent update is
        overwritten. The new row is written whatever its event time. Feast's layout: the
        features' murmur3 fields, ``_ts:<view>``, plus ``_moon_extra:<view>``.
        """
        from redis.exceptions import WatchError

        cfg = config.online_store
        client = self._get_client(cfg)
        fv_name = _versioned_fv_name(table, config)
        ts_field = f"_ts:{fv_name}".encode()
        extra_field = f"_moon_extra:{fv_name}".encode()
        names = [f.name for f in table.features]
        name_fields = [_mmh3(f"{fv_name}:{n}") for n in names]
        field_of = dict(zip(names, name_fields, strict=True))
        serialize = _key_serializer(config.entity_key_serialization_version)
        project = config.project.encode("utf-8")
        ttl = int(cfg.key_ttl_seconds or 0)
        attempts = max(1, int(getattr(cfg, "update_attempts", 200)))
        for i, entity_key in enumerate(keys):
            key = serialize(entity_key) + project
            for attempt in range(attempts):
                try:
                    with client.pipeline(transaction=True) as pipe:
                        pipe.watch(key)
                        got = pipe.hmget(key, [ts_field, extra_field, *name_fields])
                        stored = None
                        values = {
                            n: ValueProto.FromString(v)
                            for n, v in zip(names, got[2:], strict=True)
                            if v is not None
                        }
                        if values:
                            us = 0
                            if got[0]:
                                t = Timestamp.FromString(got[0])
                                us = t.seconds * 1_000_000 + t.nanos // 1000
                            stored = OnlineRow(values, us, got[1])
                        new = update(i, stored)
                        sec, micros = divmod(new.event_us, 1_000_000)
                        mapping: dict[bytes, bytes] = {
                            ts_field: Timestamp(seconds=sec, nanos=micros * 1000).SerializeToString()
                        }
                        for n, v in new.values.items():
                            mapping[field_of.get(n) or _mmh3(f"{fv_name}:{n}")] = (
                                v.SerializeToString()
                            )
                        if new.extra is not None:
                            mapping[extra_field] = new.extra
                        pipe.multi()
                        pipe.hset(key, mapping=mapping)
                        if ttl > 0:
                            pipe.expire(key, ttl)
                        pipe.execute()
                    break
                except WatchError:
                    time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
            else:
                raise StoreContention(
                    f"{fv_name}: {attempts} attempts to update one row lost to concurrent writers"
                )

    # -- the change log ----------------------------------------------------------------
    @staticmethod
    def _changes_keys(config: RepoConfig, table: FeatureView) -> tuple[bytes, bytes]:
        base = f"moon:changes:{config.project}:{table.name}".encode()
        return base, base + b":seq"

    def log_changes(self, config: RepoConfig, table: FeatureView, ids: Sequence[int]) -> int:
        """Record that the rows of entity ``ids`` of ``table`` were written; returns the
        sequence number given to them (all processes share one increasing sequence)."""
        client = self._get_client(config.online_store)
        log_script = client.register_script(_REDIS_LOG_CHANGES)  # reloads after NOSCRIPT
        return int(log_script(keys=list(self._changes_keys(config, table)),
                              args=[str(int(i)) for i in ids]))

    def read_changes(
        self, config: RepoConfig, table: FeatureView, after: int, limit: int = 10_000
    ) -> tuple[list[int], int]:
        """(entity ids written after sequence number ``after``, each once, oldest first;
        the cursor to read on from), at most ``limit`` ids."""
        client = self._get_client(config.online_store)
        key, _ = self._changes_keys(config, table)
        got = client.zrangebyscore(key, f"({int(after)}", "+inf", start=0, num=int(limit),
                                   withscores=True)
        if not got:
            return [], int(after)
        return [int(m) for m, _ in got], int(got[-1][1])

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        """Feast's teardown, plus this project's change logs."""
        super().teardown(config, tables, entities)
        client = self._get_client(config.online_store)
        keys = [k for t in tables for k in self._changes_keys(config, t)]
        if keys:
            client.delete(*keys)

    def write_encoded(self, config: RepoConfig, table: FeatureView, batch: EncodedRows) -> None:
        """``online_write_batch`` for rows already serialised (same keys, bytes and rule).

        The script calls are assembled as Redis protocol bytes with numpy (the values of a
        field have one width, so a batch is a matrix) and streamed on one connection; the
        server runs the newest-wins script while the next batch is prepared.
        """
        cfg = config.online_store
        if cfg.redis_type != RedisType.redis or cfg.skip_dedup:
            super().online_write_batch(config, table, batch.write_rows(), None)
            return
        n = len(batch)
        if n == 0:
            return
        from redis.exceptions import NoScriptError

        client = self._bulk_client(cfg)
        fv_name = _versioned_fv_name(table, config)
        project = config.project.encode("utf-8")
        raw_keys = [
            k + project
            for k in serialized_int64_keys(
                batch.join_key, batch.ids, config.entity_key_serialization_version
            )
        ]
        keys = _bulk_matrix(raw_keys, len(raw_keys[0]))
        del raw_keys
        # per entity: sec, nanos, Timestamp bytes (shared per distinct time), n, field/value
        stamps: dict[int, bytes] = {}
        for u in np.unique(batch.event_us).tolist():
            sec, micros = divmod(int(u), 1_000_000)
            stamp = Timestamp(seconds=sec, nanos=micros * 1000).SerializeToString()
            stamps[u] = b"".join(
                _bulk(x) for x in (str(sec).encode(), str(micros * 1000).encode(), stamp)
            ) + _bulk(str(len(batch.values)).encode())
        body = _entity_blocks(
            [_bulk(_mmh3(f"{fv_name}:{name}")) for name in batch.values],
            list(batch.values.values()),
            n,
        )
        head = _bulk(f"_ts:{fv_name}".encode()) + _bulk(str(int(cfg.key_ttl_seconds or 0)).encode())
        us = batch.event_us.tolist()
        step = max(1, int(getattr(cfg, "script_batch", 500)))
        pool = client.connection_pool

        def send(sha: bytes) -> None:
            conn = pool.get_connection()
            try:
                calls = 0
                for s in range(0, n, step):
                    e = min(n, s + step)
                    m = e - s
                    parts = [
                        f"*{3 + m + 2 + 4 * m + 2 * len(batch.values) * m}\r\n".encode(),
                        b"$7\r\nEVALSHA\r\n",
                        _bulk(sha),
                        _bulk(str(m).encode()),
                        keys[s:e].tobytes(),
                        head,
                    ]
                    for i in range(s, e):
                        parts.append(stamps[us[i]])
                        parts.append(body[i])
                    conn.send_packed_command(parts)
                    calls += 1
                for _ in range(calls):
                    conn.read_response()
            except BaseException:
                conn.disconnect()  # replies may be left unread
                raise
            finally:
                pool.release(conn)

        for attempt in range(2):
            # loaded on every call (idempotent), and again when the server restarted
            # mid-stream: newest-wins makes the repeated writes no-ops
            sha = client.script_load(_REDIS_NEWEST_WINS)
            self._script_sha = sha
            try:
                send(sha.encode() if isinstance(sha, str) else sha)
                return
            except NoScriptError:
                if attempt:
                    raise


def _bulk(b: bytes) -> bytes:
    """One Redis protocol bulk string."""
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _same_length(values: Sequence[bytes]) -> int | None:
    """The common length of ``values``, or None when they differ."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    if lengths.size and bool(np.all(lengths == lengths[0])):
        return int(lengths[0])
    return None


def _bulk_matrix(values: Sequence[bytes], length: int) -> np.ndarray:
    """N byte strings of one ``length`` as a uint8 matrix [N, W] of protocol bulk strings."""
    n = len(values)
    mat = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(n, length)
    header = np.frombuffer(b"$%d\r\n" % length, dtype=np.uint8)
    out = np.empty((n, header.size + length + 2), dtype=np.uint8)
    out[:, : header.size] = header
    out[:, header.size : header.size + length] = mat
    out[:, header.size + length :] = np.frombuffer(b"\r\n", dtype=np.uint8)
    return out


def _entity_blocks(fields: list[bytes], columns: list[Sequence[bytes]], n: int) -> Sequence[bytes]:
    """Per entity, the protocol bytes of its (field, value) pairs: ``fields`` are bulk
    strings already, ``columns`` the N values of each field. Built as one matrix when every
    field's values have one length (vectors, a shared version), else per entity."""
    lengths = [_same_length(c) for c in columns]
    if all(length is not None for length in lengths):
        pieces: list[np.ndarray] = []
        for f, col, length in zip(fields, columns, lengths, strict=True):
            pieces.append(np.broadcast_to(np.frombuffer(f, dtype=np.uint8), (n, len(f))))
            pieces.append(_bulk_matrix(col, int(length)))  # type: ignore[arg-type]
        mat = np.concatenate(pieces, axis=1)
        width = mat.shape[1]
        raw = mat.tobytes()
        return [raw[i : i + width] for i in range(0, n * width, width)]
    return [
        b"".join(f + _bulk(col[i]) for f, col in zip(fields, columns, strict=True))
        for i in range(n)
    ]
