"""Online store plug-ins: Feast's SQLite and Redis stores with newest-wins writes.

Feast's ``SqliteOnlineStore`` upserts unconditionally, so an older-timestamp write (a late
push, a re-run of an old materialization) replaces newer data. ``MoonSqliteOnlineStore``
keeps Feast's table layout and read path and changes only the write: a row is replaced
only when the incoming event timestamp is strictly later (microsecond precision, kept in
an extra ``event_ts_us`` column because Feast stores whole seconds). That is the rule of
Feast's Redis store, which skips a write whose timestamp is not later than the stored one,
so both profiles behave the same. Every write path goes through ``online_write_batch``:
``materialize``, ``push``, ``write_to_online_store`` and our chunked writer.

Select it in ``feature_store.yaml`` with::

    online_store:
      type: moon_rec.featurestore.online_stores.MoonSqliteOnlineStore
      path: online.db

``MoonRedisOnlineStore`` keeps Feast's Redis layout and rule but does the compare-and-write
atomically in a server-side script, one call per few hundred entities (faster, and no
race between concurrent writers).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

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

_LIST_KINDS = frozenset(
    f"{t}_list_val"
    for t in ("bytes", "string", "int32", "int64", "double", "float", "bool", "unix_timestamp")
)

WriteRow = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


def epoch_micros(ts: datetime) -> int:
    """Microseconds since the epoch of ``ts`` (naive means UTC, as in Feast)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


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


class MoonSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store whose writes never replace newer data with older."""

    _checked_tables: set[str] | None = None

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            cfg = config.online_store
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
        q = _quote_id(table_name)
        sql = (
            f"INSERT INTO {q} (entity_key, feature_name, value, value_text, event_ts, "
            f"created_ts, {_TS_US}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            f"created_ts = excluded.created_ts, {_TS_US} = excluded.{_TS_US} "
            f"WHERE excluded.{_TS_US} > COALESCE({q}.{_TS_US}, {q}.event_ts * 1000000)"
        )
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
        with conn:
            conn.executemany(sql, rows)
        if progress:
            progress(len(data))


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


class MoonRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """``RedisOnlineStoreConfig`` whose writes run as one atomic server-side script."""

    type: Literal["moon_rec.featurestore.online_stores.MoonRedisOnlineStore"] = (
        "moon_rec.featurestore.online_stores.MoonRedisOnlineStore"  # type: ignore[assignment]
    )
    script_batch: int = 500
    """Entities per script call (a call blocks the server while it runs)."""


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

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[WriteRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write ``data`` where the incoming event time is strictly later than the stored."""
        cfg = config.online_store
        if cfg.redis_type != RedisType.redis or cfg.skip_dedup:
            super().online_write_batch(config, table, data, progress)
            return
        client = self._get_client(cfg)
        if self._script_sha is None:
            self._script_sha = client.script_load(_REDIS_NEWEST_WINS)
        fv_name = _versioned_fv_name(table, config)
        ts_field = f"_ts:{fv_name}"
        serialize = _key_serializer(config.entity_key_serialization_version)
        project = config.project.encode("utf-8")
        fields: dict[str, bytes] = {}
        ttl = int(cfg.key_ttl_seconds or 0)
        step = max(1, int(getattr(cfg, "script_batch", 500)))
        with client.pipeline(transaction=False) as pipe:
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
                pipe.evalsha(self._script_sha, len(keys), *keys, *argv)
            pipe.execute()
        if progress:
            progress(len(data))
