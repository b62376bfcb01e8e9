"""The writer: new items and behaviour events, written to the online store.

- items: title + image -> MOON product embedding (``QueryEncoder``) -> its semantic-ID
  code (the snapshot's quantiser, as the embed job codes its rows) -> the embedding row
  (vectors and code in one row, one write; newest wins in the store) and the attribute
  row -> the item change log (other processes pick the item up from it) -> the catalog
  (center + ANN), rankable at once;
- behaviour: the event time is checked against a window around now (422 naming ``ts``
  outside it), then appended atomically to the user's stored sequence
  (``moon_rec.featurestore.push.OnlineWriter.append_behaviour``): every acknowledged event
  is kept, whatever the number of serving processes.

The feature views are resolved once (``OnlineWriter``), not read from the registry per
write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from moon_rec.data.embeddings import embedding_table
from moon_rec.featurestore.layout import TIMESTAMP_FIELD
from moon_rec.featurestore.push import OnlineWriter
from moon_rec.featurestore.tables import ITEM_FEATURE_SCHEMA
from serving.catalog import Catalog
from serving.config import ACTIONS, ServiceConfig
from serving.errors import BadInput, NotFound
from serving.query_encoder import QueryEncoder
from serving.store_guard import StoreGuard


class Writer:
    """Items and behaviour into the online store and the catalog.

    Args:
        online: writes through feature views resolved once.
        guard: every store call goes through it.
        catalog: new items are added to it (and logged for the other processes).
        encoder: embeds new items.
        config: the behaviour time window.
    """

    def __init__(
        self,
        online: OnlineWriter,
        guard: StoreGuard,
        catalog: Catalog,
        encoder: QueryEncoder,
        config: ServiceConfig,
    ) -> None:
        self.online = online
        self.guard = guard
        self.catalog = catalog
        self.encoder = encoder
        self.config = config

    def add_item(
        self,
        item_id: int,
        title: str,
        image: str | bytes | None,
        *,
        category_id: int = -1,
        brand_id: int = -1,
        spu_id: int | None = None,
        price: float | None = None,
        attributes: str | None = None,
    ) -> dict[str, Any]:
        """Embed a new (or changed) item, code it, push it online and into the catalog;
        without an image, a text-only product of ``product_text(title, attributes)`` (as
        the batch embed job embeds a text-only catalog). Returns the item_id, the
        embedding version, the event time and ``semantic_ids`` (the code, [L] ints, or
        None when the snapshot has no quantiser)."""
        from moon_rec.encoders import product_text

        if not title or not title.strip():
            raise BadInput("title: empty title", "title")
        img = self.encoder.decode_image(image, "image")
        text = title if img is not None else product_text(title, attributes)
        vecs = self.encoder.product_vectors(text, img)
        # the largest prefix, as the embed job codes its rows (emb_{max dim})
        codes = self.catalog.encode_codes(vecs[max(vecs)][None, :])
        now = datetime.now(UTC)
        row = embedding_table([item_id], {d: v[None, :] for d, v in vecs.items()},
                              self.encoder.model_version, now, semantic_ids=codes)
        attrs = pa.Table.from_pydict(
            {
                "item_id": [item_id], TIMESTAMP_FIELD: [now], "category_id": [category_id],
                "brand_id": [brand_id], "spu_id": [spu_id], "price": [price], "launch_ts": [now],
                **{f.name: [0] for f in ITEM_FEATURE_SCHEMA if f.name.startswith("n_")},
            },
            schema=ITEM_FEATURE_SCHEMA,
        )
        self.guard.call("write item", self.online.item_embeddings, row)
        self.guard.call("write item attributes", self.online.item_attributes, attrs)
        self.guard.call("log item", self.online.changes.record, [item_id])
        vec = vecs[self.catalog.dim]
        self.catalog.upsert(np.array([item_id]), vec[None, :], np.array([category_id]),
                            np.array([brand_id]), codes)
        return {"item_id": item_id, "embedding_version": self.encoder.model_version,
                "event_timestamp": now.isoformat(),
                "semantic_ids": None if codes is None else codes[0].tolist()}

    def check_event_time(self, ts: datetime | None) -> datetime:
        """``ts`` (naive means UTC; None means now) inside the accepted window around
        now, else ``BadInput`` naming ``ts``."""
        now = datetime.now(UTC)
        if ts is None:
            return now
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        cfg = self.config
        earliest = now - timedelta(seconds=cfg.behaviour_max_age_s)
        latest = now + timedelta(seconds=cfg.behaviour_max_ahead_s)
        if not earliest <= ts <= latest:
            raise BadInput(
                f"ts: {ts.isoformat()} is outside the accepted window "
                f"[{earliest.isoformat(timespec='seconds')}, "
                f"{latest.isoformat(timespec='seconds')}] (now - "
                f"{cfg.behaviour_max_age_s:g} s .. now + {cfg.behaviour_max_ahead_s:g} s)",
                "ts",
            )
        return ts

    def add_behaviour(
        self, user_id: int, item_id: int, action: str, ts: datetime | None = None
    ) -> dict[str, Any]:
        """Append one behaviour event to the user's online sequence (atomically)."""
        if action not in ACTIONS:
            raise BadInput(f"action: {action!r} not in {ACTIONS}", "action")
        ts = self.check_event_time(ts)
        cat, _, found = self.catalog.ensure_items(np.array([item_id], np.int64))
        if not found[0]:
            raise NotFound(f"item_id: unknown item {item_id}", "item_id")
        events = pa.table(
            {
                "user_id": pa.array([user_id], pa.int64()),
                "item_id": pa.array([item_id], pa.int64()),
                "ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
                "action": pa.array([action]),
            }
        )
        self.guard.call("write behaviour", self.online.append_behaviour, events,
                        {item_id: int(cat[0])})
        return {"user_id": user_id, "item_id": item_id, "action": action, "ts": ts.isoformat()}
