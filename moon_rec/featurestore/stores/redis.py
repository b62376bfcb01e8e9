"""``MoonRedisOnlineStore``: Feast's Redis store with atomic newest-wins writes and the MOON
interface (``moon_rec.featurestore.stores.base``).

Feast's store reads the stored timestamps in one round trip and writes in a second,
comparing in Python: a concurrent writer can slip in between, and the per-row Python work
dominates bulk loads. Here each entity is compared and written inside Redis, by a Lua
script, one call per few hundred entities; the script is re-loaded when a restarted server
has forgotten it (NOSCRIPT), and the client has short timeouts and one immediate retry, so
a dead server fails a call in well under a second instead of after seconds of back-off.
``write_encoded`` streams the same script calls assembled as protocol bytes with numpy.

``update_rows`` is WATCH / MULTI / EXEC per entity, retried on conflict; the change log is
a sorted set ``moon:changes:<project>:<view>`` scored by a per-view counter.

Select it in ``feature_store.yaml`` with::

    online_store:
      type: moon_rec.featurestore.stores.redis.MoonRedisOnlineStore
      connection_string: 127.0.0.1:6379
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

from moon_rec.featurestore.stores.base import COMMON_FAULTS, MoonOnlineStore, StoreContention
from moon_rec.featurestore.stores.rows import (
    EncodedRows,
    OnlineRow,
    RowUpdate,
    WriteRow,
    epoch_micros,
    key_serializer,
    serialized_int64_keys,
)

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

    type: Literal["moon_rec.featurestore.stores.redis.MoonRedisOnlineStore"] = (
        "moon_rec.featurestore.stores.redis.MoonRedisOnlineStore"  # type: ignore[assignment]
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


def _config(cfg: Any) -> MoonRedisOnlineStoreConfig:
    if not isinstance(cfg, MoonRedisOnlineStoreConfig):
        raise TypeError(f"online_store config {type(cfg).__name__} is not MoonRedisOnlineStoreConfig")
    return cfg


class MoonRedisOnlineStore(RedisOnlineStore, MoonOnlineStore):
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
            kwargs["socket_timeout"] = float(_config(cfg).bulk_timeout_s)
            kwargs.setdefault("socket_connect_timeout",
                              float(_config(cfg).connect_timeout_s))
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
            kwargs.setdefault("socket_timeout", float(_config(cfg).socket_timeout_s))
            kwargs.setdefault("socket_connect_timeout",
                              float(_config(cfg).connect_timeout_s))
            kwargs.setdefault("retry", Retry(NoBackoff(), int(_config(cfg).retries)))
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
        step = max(1, int(_config(cfg).script_batch))
        client = self._bulk_client(cfg) if len(data) > step else self._get_client(cfg)
        # register_script: a pipeline checks SCRIPT EXISTS and loads it first, so a server
        # restarted since the last call (which forgot every script) gets it back
        script = client.register_script(_REDIS_NEWEST_WINS)
        fv_name = _versioned_fv_name(table, config)
        ts_field = f"_ts:{fv_name}"
        serialize = key_serializer(config.entity_key_serialization_version)
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
        serialize = key_serializer(config.entity_key_serialization_version)
        project = config.project.encode("utf-8")
        ttl = int(cfg.key_ttl_seconds or 0)
        attempts = max(1, int(_config(cfg).update_attempts))
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

    def fault_types(self) -> tuple[type[BaseException], ...]:
        """A refused, reset or timed-out connection, a server loading its data, read-only
        (a replica), without its master, or that forgot a script mid-call."""
        from redis import exceptions as r

        return (*COMMON_FAULTS, r.ConnectionError, r.TimeoutError, r.BusyLoadingError,
                r.ReadOnlyError, r.NoScriptError, r.MasterDownError, r.TryAgainError)

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
        step = max(1, int(_config(cfg).script_batch))
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
