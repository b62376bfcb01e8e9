"""``MoonSqliteOnlineStore``: Feast's SQLite store with newest-wins writes, readers that
never wait on a writer, and the MOON interface (``moon_rec.featurestore.stores.base``).

Feast's ``SqliteOnlineStore`` upserts unconditionally, so an older-timestamp write (a late
push, a re-run of an old materialization) replaces newer data. This store keeps Feast's
table layout and read path and changes the write: a row is replaced only when the incoming
event timestamp is strictly later (microsecond precision, kept in an extra ``event_ts_us``
column because Feast stores whole seconds), the rule of Feast's Redis store, so both
profiles behave the same. ``write_encoded`` writes the same bytes with the same rule
without a protobuf object per value.

Reads (``online_read``, ``read_changes``) go through a connection per thread of their own,
never the write connection: in WAL mode (the default, ``wal: true``) a reader sees the last
commit while another connection or process holds the write lock, so reads never wait on a
writer. Writes share one connection per process (one transaction at a time) and wait up to
``busy_timeout_s`` for another process's lock, then raise ``StoreBusy``.

``update_rows`` is one ``BEGIN IMMEDIATE`` transaction; the change log is a table
``<project>_moon_changes`` (view, entity_id, seq).

Select it in ``feature_store.yaml`` with::

    online_store:
      type: moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore
      path: online.db
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from moon_rec.featurestore.stores.base import COMMON_FAULTS, MoonOnlineStore, StoreBusy
from moon_rec.featurestore.stores.rows import (
    EncodedRows,
    OnlineRow,
    RowUpdate,
    WriteRow,
    epoch_micros,
    feast_seconds,
    from_epoch_micros,
    key_serializer,
    serialized_int64_keys,
)

_TS_US = "event_ts_us"
# bytes a read-modify-write keeps beside a row (``OnlineRow.extra``)
_EXTRA = "moon_extra"
_LOCK_INIT = threading.Lock()  # creates the stores' write locks and reader registries
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

_LIST_KINDS = frozenset(
    f"{t}_list_val"
    for t in ("bytes", "string", "int32", "int64", "double", "float", "bool", "unix_timestamp")
)


def _memcmp_order(ids: np.ndarray) -> np.ndarray | None:
    """The stable order that sorts N little-endian int64 keys bytewise (SQLite's BLOB
    order), or None when they already are in it."""
    k = np.ascontiguousarray(ids, dtype="<i8").view("<u8").byteswap()
    if k.size < 2 or bool(np.all(k[1:] >= k[:-1])):
        return None
    return np.argsort(k, kind="stable")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


class MoonSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """``SqliteOnlineStoreConfig`` plus WAL journaling; unknown keys are rejected."""

    type: Literal["moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore"] = (
        "moon_rec.featurestore.stores.sqlite.MoonSqliteOnlineStore"  # type: ignore[assignment]
    )
    wal: bool = True
    """Journal in WAL mode with synchronous=NORMAL: readers never wait on a writer and
    never block one (without it, a writer's commit waits for readers and readers wait
    for the commit)."""
    cache_mb: int = 128
    """SQLite page cache per connection, MiB (the default 2 MiB thrashes on bulk loads)."""
    page_size: int = 16384
    """Page size of a new database file (rows of 256 floats fit a 16 KiB page well)."""
    busy_timeout_s: float = 2.0
    """How long a write waits for another process's write lock before ``StoreBusy``."""


def _config(config: RepoConfig) -> MoonSqliteOnlineStoreConfig:
    cfg = config.online_store
    if not isinstance(cfg, MoonSqliteOnlineStoreConfig):
        raise TypeError(
            f"online_store config {type(cfg).__name__} is not MoonSqliteOnlineStoreConfig"
        )
    return cfg


class _Readers(threading.local):
    """This thread's read connection, and the store generation it was opened for."""

    conn: sqlite3.Connection | None = None
    generation: int = -1


class MoonSqliteOnlineStore(SqliteOnlineStore, MoonOnlineStore):
    """Feast's SQLite online store whose writes never replace newer data with older and
    whose reads never wait on a writer (see the module docstring)."""

    _checked_tables: set[str] | None = None
    _write_lock: threading.Lock | None = None
    _readers: _Readers | None = None
    _reader_conns: list[sqlite3.Connection] | None = None
    _generation: int = 0  # bumped by teardown: the readers reopen

    def _lock(self) -> threading.Lock:
        """One write transaction at a time on the shared connection (threads of one
        process share it; a commit by one would end another's transaction)."""
        if self._write_lock is None:
            with _LOCK_INIT:
                if self._write_lock is None:
                    self._write_lock = threading.Lock()
        return self._write_lock

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        """The write connection (Feast's, shared by the process's threads)."""
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            cfg = _config(config)
            conn.execute(f"PRAGMA busy_timeout={int(1000 * cfg.busy_timeout_s)}")
            empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if empty:  # the page size can only be chosen before the first table
                conn.execute(f"PRAGMA page_size={int(cfg.page_size)}")
            if cfg.wal:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={-1024 * int(cfg.cache_mb)}")
        return conn

    def _read_conn(self, config: RepoConfig) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use).

        Never the write connection: SQLite holds a connection's mutex while a statement
        waits for a lock, so a read on the write connection would queue behind a write
        that waits for another process's lock.
        """
        if self._readers is None:
            with _LOCK_INIT:
                if self._readers is None:
                    self._reader_conns = []
                    self._readers = _Readers()
        local = self._readers
        if local.conn is None or local.generation != self._generation:
            self._get_conn(config)  # creates the file and sets its journal mode, once
            cfg = _config(config)
            # Feast's connection options (its timestamp converters read event_ts); the
            # connection is used by this thread only, and closed by teardown from another
            conn = sqlite3.connect(
                self._get_db_path(config),
                detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={int(1000 * cfg.busy_timeout_s)}")
            conn.execute("PRAGMA query_only=1")
            conn.execute(f"PRAGMA cache_size={-1024 * int(cfg.cache_mb)}")
            with _LOCK_INIT:
                assert self._reader_conns is not None
                self._reader_conns.append(conn)
            local.conn, local.generation = conn, self._generation
        return local.conn

    @contextlib.contextmanager
    def _writing(self, config: RepoConfig) -> Iterator[None]:
        """Turns a write that waited ``busy_timeout_s`` for the lock into ``StoreBusy``."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise StoreBusy(
                f"{self._get_db_path(config)}: another connection held the write lock for "
                f"over {_config(config).busy_timeout_s:g} s ({exc})"
            ) from exc

    def fault_types(self) -> tuple[type[BaseException], ...]:
        """A locked, missing or unreadable database file (``sqlite3.OperationalError``),
        a closed connection (``InterfaceError``)."""
        return (*COMMON_FAULTS, sqlite3.OperationalError, sqlite3.InterfaceError)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's read (same query, same result), on this thread's read connection."""
        conn = self._read_conn(config)
        serialize = key_serializer(config.entity_key_serialization_version)
        keys = [serialize(k) for k in entity_keys]
        name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        rows = conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts FROM {_quote_id(name)} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))}) ORDER BY entity_key",
            keys,
        ).fetchall()
        by_key = {k: list(g) for k, g in itertools.groupby(rows, key=operator.itemgetter(0))}
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            values: dict[str, ValueProto] = {}
            res_ts: datetime | None = None
            for _, feature_name, value, ts in by_key.get(key, ()):
                values[feature_name] = ValueProto.FromString(value)
                res_ts = ts.astimezone(UTC) if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
            result.append((res_ts, values) if values else (None, None))
        return result

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

    def _upsert(self, config: RepoConfig, table: FeatureView) -> tuple[sqlite3.Connection, str]:
        """The write connection and the upsert statement of ``table`` (its event-time
        column made sure of first)."""
        conn = self._get_conn(config)
        table_name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        with self._writing(config):
            self._ensure_ts_column(conn, table_name)
        return conn, self._upsert_sql(table_name)

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
        conn, sql = self._upsert(config, table)
        serialize = key_serializer(config.entity_key_serialization_version)
        seconds_of: dict[datetime | None, int | None] = {None: None}
        kinds: dict[str, str] = {}

        rows: list[tuple[Any, ...]] = []
        for entity_key, values, ts, created in data:
            key = serialize(entity_key)
            seconds = seconds_of.get(ts)
            if seconds is None:
                seconds = seconds_of[ts] = feast_seconds(ts)
            micros = epoch_micros(ts)
            created_s = seconds_of.get(created)
            if created_s is None and created is not None:
                created_s = seconds_of[created] = feast_seconds(created)
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
        with self._writing(config), self._lock(), conn:
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
        conn, sql = self._upsert(config, table)
        keys = serialized_int64_keys(
            batch.join_key, batch.ids, config.entity_key_serialization_version
        )
        us = np.asarray(batch.event_us, dtype=np.int64)
        # the seconds exactly as online_write_batch stores them, once per distinct time
        distinct, inverse = np.unique(us, return_inverse=True)
        secs = np.array(
            [feast_seconds(from_epoch_micros(int(u))) for u in distinct.tolist()], dtype=np.int64
        )[inverse.reshape(-1)]
        order = _memcmp_order(batch.ids)

        pick = operator.itemgetter(*order.tolist()) if order is not None and n > 1 else None

        def col(seq: Sequence[Any]) -> Sequence[Any]:
            return seq if pick is None else pick(seq)  # C-level gather

        created = feast_seconds(batch.created)
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
        with self._writing(config), self._lock(), conn:
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
        with self._writing(config):
            self._ensure_ts_column(conn, table_name)
        q = _quote_id(table_name)
        serialize = key_serializer(config.entity_key_serialization_version)
        bkeys = [serialize(k) for k in keys]
        write = (
            f"INSERT INTO {q} (entity_key, feature_name, value, value_text, event_ts, "
            f"created_ts, {_TS_US}, {_EXTRA}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            f"created_ts = excluded.created_ts, {_TS_US} = excluded.{_TS_US}, "
            f"{_EXTRA} = excluded.{_EXTRA}"
        )
        with self._writing(config), self._lock():
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
                    seconds = feast_seconds(from_epoch_micros(new.event_us))
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

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        """Feast's teardown (closes the write connection, deletes the file), after closing
        every thread's read connection (a thread's next read opens a new one)."""
        with _LOCK_INIT:
            conns, self._reader_conns = self._reader_conns or [], []
            self._generation += 1
        for conn in conns:
            conn.close()
        self._checked_tables = None
        super().teardown(config, tables, entities)

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
        with self._writing(config):
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
        the cursor to read on from), at most ``limit`` ids; on the read connection (the
        log's table is created by the first ``log_changes``, not here)."""
        conn = self._read_conn(config)
        try:
            rows = conn.execute(
                f"SELECT entity_id, seq FROM {self._changes_table(config)} "
                "WHERE view = ? AND seq > ? ORDER BY seq LIMIT ?",
                (table.name, int(after), int(limit)),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []
        if not rows:
            return [], int(after)
        return [int(r[0]) for r in rows], int(rows[-1][1])

