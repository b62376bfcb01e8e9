"""The writer: new items and behaviour events, pushed to the online store.

- items: title + image -> MOON product embedding (``QueryEncoder``) -> Feast push of the
  embedding and the attributes -> the catalog (center + ANN), rankable at once;
- behaviour: ``moon_rec.featurestore.push.push_behaviour`` (the next rank reads it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from moon_rec.featurestore.layout import TIMESTAMP_FIELD
from moon_rec.featurestore.push import (
    push_behaviour,
    push_item_attributes,
    push_item_embeddings,
)
from moon_rec.featurestore.tables import ITEM_FEATURE_SCHEMA
from serving.catalog import Catalog
from serving.config import ACTIONS
from serving.errors import BadInput, NotFound
from serving.query_encoder import QueryEncoder
from serving.store_guard import StoreGuard


class Writer:
    """Items and behaviour into the online store and the catalog.

    Args:
        mfs: the feature store (``moon_rec.featurestore.store.MoonFeatureStore``).
        client: the online client (reads current sequences and item categories).
        guard: every store call goes through it.
        catalog: new items are added to it.
        encoder: embeds new items.
    """

    def __init__(
        self, mfs: Any, client: Any, guard: StoreGuard, catalog: Catalog, encoder: QueryEncoder
    ) -> None:
        self.mfs = mfs
        self.client = client
        self.guard = guard
        self.catalog = catalog
        self.encoder = encoder

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
        """Embed a new (or changed) item, push it online and into the catalog; without an
        image, a text-only product of ``product_text(title, attributes)`` (as the batch
        embed job embeds a text-only catalog)."""
        from moon_rec.encoders import product_text

        if not title or not title.strip():
            raise BadInput("title: empty title", "title")
        img = self.encoder.decode_image(image, "image")
        text = title if img is not None else product_text(title, attributes)
        vecs = self.encoder.product_vectors(text, img)
        now = datetime.now(UTC)
        cols: dict[str, Any] = {"item_id": pa.array([item_id], pa.int64())}
        for d, v in vecs.items():
            cols[f"emb_{d}"] = pa.array([v.tolist()], pa.list_(pa.float32()))
        cols["model_version"] = pa.array([self.encoder.model_version])
        cols[TIMESTAMP_FIELD] = pa.array([now], pa.timestamp("us", tz="UTC"))
        attrs = pa.Table.from_pydict(
            {
                "item_id": [item_id], TIMESTAMP_FIELD: [now], "category_id": [category_id],
                "brand_id": [brand_id], "spu_id": [spu_id], "price": [price], "launch_ts": [now],
                **{f.name: [0] for f in ITEM_FEATURE_SCHEMA if f.name.startswith("n_")},
            },
            schema=ITEM_FEATURE_SCHEMA,
        )
        self.guard.call("push item", push_item_embeddings, self.mfs, pa.table(cols))
        self.guard.call("push item attributes", push_item_attributes, self.mfs, attrs)
        vec = vecs[self.catalog.dim]
        self.catalog.upsert(np.array([item_id]), vec[None, :], np.array([category_id]),
                            np.array([brand_id]))
        return {"item_id": item_id, "embedding_version": self.encoder.model_version,
                "event_timestamp": now.isoformat()}

    def add_behaviour(
        self, user_id: int, item_id: int, action: str, ts: datetime | None = None
    ) -> dict[str, Any]:
        """Append one behaviour event to the user's online sequence."""
        if action not in ACTIONS:
            raise BadInput(f"action: {action!r} not in {ACTIONS}", "action")
        _, _, found = self.catalog.ensure_items(np.array([item_id], np.int64))
        if not found[0]:
            raise NotFound(f"item_id: unknown item {item_id}", "item_id")
        ts = ts or datetime.now(UTC)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        events = pa.table(
            {
                "user_id": pa.array([user_id], pa.int64()),
                "item_id": pa.array([item_id], pa.int64()),
                "ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
                "action": pa.array([action]),
            }
        )
        self.guard.call("push behaviour", push_behaviour, self.mfs, events, client=self.client)
        return {"user_id": user_id, "item_id": item_id, "action": action, "ts": ts.isoformat()}
