"""The real-time path: new items and fresh behaviour written to the online store.

``OnlineWriter`` resolves the feature views once (no registry read per write: on the
production profile each read is a PostgreSQL round trip) and writes through the online
store of the profile, a ``MoonOnlineStore`` (``moon_rec.featurestore.stores``; any other
store is refused when the writer is made):

- items: embedding and attribute rows, converted exactly as a Feast push converts them
  and written by the store's ``online_write_batch`` with its newest-wins rule, so a late
  write never replaces a newer embedding;
- the item change log (``ItemChangeLog``): the items written since a cursor, which every
  serving process reads on to catch up with the others' writes;
- behaviour: an atomic append to each user's sequence (the store's ``update_rows``), so
  every acknowledged event is kept whatever the number of serving processes writing for
  the same user.

Sequence order: most recent first, by event time; events of equal time keep the order
they were acknowledged in (the later one first), and none is ever dropped for a tie. Feast
keeps ``hist_ts`` in whole seconds, so the exact microseconds of the events are kept
beside the row (the store's extra bytes, checked against ``hist_ts`` when read back) and
order the events within a second. Each event also carries a random id there, so an
append that is applied twice (a transaction whose reply was lost, then retried) adds the
event once. The row is stamped after both the stored row and the newest event; the
sequence keeps the newest L events (the view's ``max_len`` tag).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.feature_view import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from moon_rec.data.embeddings import SEMANTIC_IDS, emb_column
from moon_rec.data.errors import DataError
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.featurestore.layout import (
    ITEM_ATTRIBUTES_VIEW,
    ITEM_EMBEDDING_VIEW,
    TIMESTAMP_FIELD,
    USER_BEHAVIOUR_VIEW,
    check_view_fits,
)
from moon_rec.featurestore.online import OnlineFeatureClient
from moon_rec.featurestore.store import MoonFeatureStore
from moon_rec.featurestore.stores import MoonOnlineStore, OnlineRow, epoch_micros

# the latest event time whose row stamp (+1 us) is still a datetime (9999-12-31 ...)
MAX_EVENT_US = epoch_micros(datetime.max.replace(tzinfo=UTC)) - 1
_EXTRA_MAGIC = b"MTS2"  # then n int64 microsecond times, then n int64 event ids


@dataclass(frozen=True)
class BehaviourEvent:
    """One behaviour of a user's sequence (``ts_us``: microseconds since the epoch;
    ``event_id``: random, nonzero, to apply an append once; 0 where unknown)."""

    ts_us: int
    item_id: int
    category_id: int
    action: str
    event_id: int = 0


def decode_sequence(row: OnlineRow | None) -> list[BehaviourEvent]:
    """The events of a stored ``user_behaviour`` row, most recent first ([] for None).

    Times are exact where the row's extra bytes hold the microseconds of every event and
    agree with ``hist_ts`` (seconds); otherwise (a row written by materialize or another
    writer) the whole seconds."""
    if row is None:
        return []
    v = row.values

    def ints(name: str) -> list[int]:
        return list(v[name].int64_list_val.val) if name in v else []

    items, cats = ints("hist_item_ids"), ints("hist_category_ids")
    actions = list(v["hist_actions"].string_list_val.val) if "hist_actions" in v else []
    secs = list(v["hist_ts"].unix_timestamp_list_val.val) if "hist_ts" in v else []
    n = min(len(items), len(cats), len(actions), len(secs))
    times = [s * 1_000_000 for s in secs[:n]]
    ids = [0] * n
    extra = row.extra
    if extra is not None and extra[:4] == _EXTRA_MAGIC and len(extra) == 4 + 16 * n:
        packed = struct.unpack(f"<{2 * n}q", extra[4:])
        exact, stored_ids = list(packed[:n]), list(packed[n:])
        if all(u // 1_000_000 == s for u, s in zip(exact, secs, strict=False)):
            times, ids = exact, stored_ids
    return [BehaviourEvent(times[j], items[j], cats[j], actions[j], ids[j]) for j in range(n)]


def encode_sequence(events: Sequence[BehaviourEvent], stamp_us: int) -> OnlineRow:
    """The ``user_behaviour`` row of ``events`` (most recent first), stamped ``stamp_us``;
    the values are those a Feast push of the same sequence writes."""
    secs = [e.ts_us // 1_000_000 for e in events]
    values = {
        "hist_item_ids": ValueProto(int64_list_val=Int64List(val=[e.item_id for e in events])),
        "hist_category_ids": ValueProto(
            int64_list_val=Int64List(val=[e.category_id for e in events])
        ),
        "hist_actions": ValueProto(string_list_val=StringList(val=[e.action for e in events])),
        "hist_ts": ValueProto(unix_timestamp_list_val=Int64List(val=secs)),
        "seq_len": ValueProto(int64_val=len(events)),
    }
    extra = _EXTRA_MAGIC + struct.pack(
        f"<{2 * len(events)}q", *(e.ts_us for e in events), *(e.event_id for e in events)
    )
    return OnlineRow(values, stamp_us, extra)


def merge_events(
    stored: Sequence[BehaviourEvent], new: Sequence[BehaviourEvent], cap: int
) -> list[BehaviourEvent]:
    """``stored`` (most recent first) plus ``new`` (in acknowledgement order), most recent
    first by event time, the later-acknowledged first among equal times; the newest
    ``cap``. A new event whose id is already stored (an append applied twice) is skipped."""
    seen = {e.event_id for e in stored if e.event_id}
    fresh = [e for e in new if not (e.event_id and e.event_id in seen)]
    merged = sorted([*reversed(fresh), *stored], key=lambda e: -e.ts_us)  # stable
    return merged[:cap]


def append_update(
    stored: OnlineRow | None, new: Sequence[BehaviourEvent], cap: int
) -> OnlineRow:
    """The new row of one user: ``merge_events`` of the stored and new events, stamped
    1 us after both the stored row and the newest event."""
    newest = max(e.ts_us for e in new)
    stamp = max(stored.event_us if stored is not None else 0, newest) + 1
    return encode_sequence(merge_events(decode_sequence(stored), new, cap), stamp)


class ItemChangeLog:
    """Which items were written online since a cursor: the store's change log of the
    embedding view (``MoonOnlineStore.log_changes`` / ``read_changes``).

    Every process that writes an item records it here after the write; every process
    that serves from the store reads it on, so they all converge on the store's rows.

    Args:
        config: the repository config.
        online_store: the profile's online store.
        view: the item embedding view.
    """

    def __init__(self, config: RepoConfig, online_store: MoonOnlineStore,
                 view: FeatureView) -> None:
        self.config = config
        self.online_store = online_store
        self.view = view

    def record(self, item_ids: Sequence[int]) -> int:
        """Log that ``item_ids`` were written; returns their sequence number."""
        return int(self.online_store.log_changes(self.config, self.view, list(item_ids)))

    def read(self, after: int, limit: int = 10_000) -> tuple[list[int], int]:
        """(item ids written after cursor ``after``, each once; the next cursor)."""
        ids, cursor = self.online_store.read_changes(self.config, self.view, after, limit)
        return list(ids), int(cursor)


class OnlineWriter:
    """Writes of new items and fresh behaviour through feature views resolved once.

    Args:
        mfs: the feature store; its views are read from the registry here, once.

    Raises:
        StoreInterfaceError: naming the store's class when the profile's online store is
            not a ``MoonOnlineStore``.

    Example::

        writer = OnlineWriter(mfs)
        writer.item_embeddings(table)          # the embed job's columns, newest wins
        writer.append_behaviour(events, {10: 5})  # atomic per user, any number of processes
    """

    def __init__(self, mfs: MoonFeatureStore) -> None:
        store = mfs.store
        self.config = store.config
        self.provider = store._get_provider()
        self.online_store = mfs.online_store
        self.embedding_view = store.get_feature_view(ITEM_EMBEDDING_VIEW)
        self.attributes_view = store.get_feature_view(ITEM_ATTRIBUTES_VIEW)
        self.behaviour_view = store.get_feature_view(USER_BEHAVIOUR_VIEW)
        self.max_len = int(self.behaviour_view.tags.get("max_len", "50"))
        self.changes = ItemChangeLog(self.config, self.online_store, self.embedding_view)

    def item_embeddings(self, table: pa.Table) -> int:
        """Write embedding rows (the embed job's format) of new or re-embedded items.

        Args:
            table: item_id, emb_{d} list<float32> per d, model_version, event_timestamp [N];
                semantic_ids list<int32> [N, L] (``encode_codes`` of the snapshot's
                quantiser) when the view carries codes.
            The sizes written are the view's (the snapshot's); rows with another set of
            sizes are refused by name.
        Returns:
            N, the rows sent (rows older than what the store holds are skipped by it).
        """
        dims = check_view_fits(self.embedding_view, table.column_names, "embedding push")
        cols = ["item_id", *(emb_column(d) for d in dims), "model_version", TIMESTAMP_FIELD]
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise DataError(f"missing columns {missing}", file="embedding push")
        if table.num_rows == 0:
            return 0
        frame = table.select(cols).to_pandas()
        for d in dims:  # Feast's converter wants lists, not numpy arrays
            frame[emb_column(d)] = [
                np.asarray(v, dtype=np.float32).tolist() for v in frame[emb_column(d)]
            ]
        if any(f.name == SEMANTIC_IDS for f in self.embedding_view.features):
            # the view carries semantic IDs: the rows' codes, or null without them
            codes = (table.column(SEMANTIC_IDS).to_pylist()
                     if SEMANTIC_IDS in table.column_names else [None] * table.num_rows)
            frame[SEMANTIC_IDS] = [None if c is None else [int(x) for x in c] for c in codes]
        self.provider.ingest_df(self.embedding_view, frame)
        return table.num_rows

    def item_attributes(self, table: pa.Table) -> int:
        """Write item attribute rows (``tables.ITEM_FEATURE_SCHEMA``) of new items."""
        if table.num_rows == 0:
            return 0
        self.provider.ingest_df(self.attributes_view, table.to_pandas())
        return table.num_rows

    def append_behaviour(self, events: pa.Table, categories: dict[int, int]) -> int:
        """Append behaviour events to their users' online sequences, atomically per user.

        Args:
            events: user_id, item_id, ts, action [E] (any order; per user, the order of
                the rows is the order they were acknowledged in).
            categories: item_id -> category_id of every item of ``events`` (-1 unknown).
        Returns:
            the number of users whose sequence was written.
        """
        if events.num_rows == 0:
            return 0
        users = events.column("user_id").to_numpy()
        item_ids = events.column("item_id").to_numpy()
        ts_us = pc.cast(events.column("ts"), TIMESTAMP).cast(pa.int64()).to_numpy()
        actions = events.column("action").to_pylist()
        late = np.flatnonzero(ts_us > MAX_EVENT_US)
        if len(late):
            raise DataError(
                f"event time {int(ts_us[late[0]])} us is past 9999-12-31", column="ts",
                row=int(late[0]),
            )
        uniq = np.unique(users)
        # event ids are drawn here, once: a retried transaction re-applies the same events
        per_user: list[list[BehaviourEvent]] = []
        for user in uniq.tolist():
            per_user.append([
                BehaviourEvent(int(ts_us[i]), int(item_ids[i]),
                               int(categories.get(int(item_ids[i]), -1)), str(actions[i]),
                               secrets.randbits(63) | 1)
                for i in np.flatnonzero(users == user).tolist()
            ])
        join_key = self.behaviour_view.entity_columns[0].name
        keys = [
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=int(u))])
            for u in uniq.tolist()
        ]
        cap = self.max_len

        def update(i: int, stored: OnlineRow | None) -> OnlineRow:
            return append_update(stored, per_user[i], cap)

        self.online_store.update_rows(self.config, self.behaviour_view, keys, update)
        return len(keys)


def push_behaviour(
    mfs: MoonFeatureStore,
    events: pa.Table,
    *,
    client: OnlineFeatureClient | None = None,
    writer: OnlineWriter | None = None,
) -> int:
    """Append fresh behaviour events to the users' online sequences (atomically per user).

    Args:
        events: user_id, item_id, ts, action [E] (any order).
        client: the online client the item categories are read with.
        writer: the writer to use (default: one made for this call).
    Returns:
        the number of users whose sequence was written.
    """
    if events.num_rows == 0:
        return 0
    client = client or OnlineFeatureClient(mfs)
    items = np.unique(events.column("item_id").to_numpy())
    cats = client.item_attributes(items)["category_id"]
    categories = dict(zip(items.tolist(), cats.tolist(), strict=True))
    return (writer or OnlineWriter(mfs)).append_behaviour(events, categories)
