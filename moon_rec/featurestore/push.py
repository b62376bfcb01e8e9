"""The real-time path: new items and fresh behaviour pushed to the online store.

Pushes go through Feast's push sources (``FeatureStore.push``), hence through the online
store's ``online_write_batch`` and its newest-wins rule: a late push never replaces a newer
embedding or sequence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.embeddings import SEMANTIC_IDS, emb_column
from moon_rec.data.errors import DataError
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.featurestore.layout import (
    BEHAVIOUR_PUSH,
    EMBEDDING_DIMS,
    ITEM_ATTRIBUTES_PUSH,
    ITEM_EMBEDDING_PUSH,
    ITEM_EMBEDDING_VIEW,
    TIMESTAMP_FIELD,
)
from moon_rec.featurestore.online import OnlineFeatureClient
from moon_rec.featurestore.store import MoonFeatureStore

_ONE_US = timedelta(microseconds=1)


def push_item_embeddings(
    mfs: MoonFeatureStore, table: pa.Table, dims: tuple[int, ...] = EMBEDDING_DIMS
) -> int:
    """Push embedding rows (the embed job's format) of new or re-embedded items online.

    Args:
        table: item_id, emb_{d} list<float32> per d, model_version, event_timestamp [N];
            semantic_ids list<int32> [N, L] (``encode_codes`` of the snapshot's quantiser)
            when the view carries codes.
    Returns:
        N, the rows pushed (rows older than what the store holds are skipped by it).
    """
    cols = ["item_id", *(emb_column(d) for d in dims), "model_version", TIMESTAMP_FIELD]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise DataError(f"missing columns {missing}", file="embedding push")
    if table.num_rows == 0:
        return 0
    fv = mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW)
    with_codes = any(f.name == SEMANTIC_IDS for f in fv.features)
    frame = table.select(cols).to_pandas()
    for d in dims:  # Feast's converter wants lists, not numpy arrays
        frame[emb_column(d)] = [np.asarray(v, dtype=np.float32).tolist() for v in frame[emb_column(d)]]
    if with_codes:  # the view carries semantic IDs: the rows' codes, or null without them
        codes = (
            table.column(SEMANTIC_IDS).to_pylist()
            if SEMANTIC_IDS in table.column_names
            else [None] * table.num_rows
        )
        frame[SEMANTIC_IDS] = [None if c is None else [int(x) for x in c] for c in codes]
    mfs.store.push(ITEM_EMBEDDING_PUSH, frame)
    return table.num_rows


def push_item_attributes(mfs: MoonFeatureStore, table: pa.Table) -> int:
    """Push item attribute rows (``tables.ITEM_FEATURE_SCHEMA``) of new items online."""
    if table.num_rows == 0:
        return 0
    mfs.store.push(ITEM_ATTRIBUTES_PUSH, table.to_pandas())
    return table.num_rows


def push_behaviour(
    mfs: MoonFeatureStore,
    events: pa.Table,
    *,
    client: OnlineFeatureClient | None = None,
) -> int:
    """Merge fresh behaviour events into the users' online sequences and push them.

    Args:
        events: user_id, item_id, ts, action [E] (any order).
        client: the online client to read current sequences and item categories with.
    Returns:
        the number of users whose sequence was pushed.

    Each user's new sequence is the stored one plus the events, most recent first,
    truncated to L; it is stamped after both the stored row and the newest event, so the
    newest-wins rule of the store accepts it, and a concurrent newer push is never undone.
    """
    if events.num_rows == 0:
        return 0
    client = client or OnlineFeatureClient(mfs)
    cap = client.max_len
    users = events.column("user_id").to_numpy()
    uniq = np.unique(users)
    current = client.user_sequences(uniq)
    item_ids = events.column("item_id").to_numpy()
    cats = client.item_attributes(np.unique(item_ids))
    cat_of = dict(zip(np.unique(item_ids).tolist(), cats["category_id"].tolist(), strict=True))
    ts_us = pc.cast(events.column("ts"), TIMESTAMP).cast(pa.int64()).to_numpy()
    actions = events.column("action").to_pylist()
    rows = []
    for k, user in enumerate(uniq.tolist()):
        mine = np.flatnonzero(users == user)
        n_old = int(current.lengths[k])
        merged = [
            (
                int(current.ts[k, j]),
                int(current.item_ids[k, j]),
                int(current.category_ids[k, j]),
                str(current.actions[k, j]),
            )
            for j in range(n_old)
        ] + [
            (int(ts_us[i]), int(item_ids[i]), int(cat_of[int(item_ids[i])]), actions[i])
            for i in mine
        ]
        merged.sort(key=lambda r: r[0], reverse=True)  # stable: ties keep stored-then-new order
        merged = merged[:cap]
        newest = max(int(ts_us[mine].max()), int(current.ts[k, 0]) if n_old else 0)
        stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest) + _ONE_US
        rows.append(
            {
                "user_id": user,
                TIMESTAMP_FIELD: stamp,
                "hist_item_ids": [r[1] for r in merged],
                "hist_category_ids": [r[2] for r in merged],
                "hist_actions": [r[3] for r in merged],
                "hist_ts": [
                    datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=r[0]) for r in merged
                ],
                "seq_len": len(merged),
            }
        )
    mfs.store.push(BEHAVIOUR_PUSH, pd.DataFrame(rows))
    return len(rows)
