"""Test data of the feature store suite (importable by name from its tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from moon_rec.encoders.config import DEFAULT_DIMS as EMBEDDING_DIMS
from moon_rec.featurestore.layout import ITEM_EMBEDDING_VIEW

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def embedding_table(
    item_ids: list[int], ts: datetime, model_version: str, seed: int = 0
) -> pa.Table:
    """Embedding rows in the embed job's format with random L2-normalised prefixes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(item_ids), max(EMBEDDING_DIMS))).astype(np.float32)
    cols: dict[str, pa.Array] = {"item_id": pa.array(item_ids, pa.int64())}
    for d in EMBEDDING_DIMS:
        y = x[:, :d] / np.linalg.norm(x[:, :d], axis=1, keepdims=True)
        cols[f"emb_{d}"] = pa.array(list(y), pa.list_(pa.float32()))
    cols["model_version"] = pa.array([model_version] * len(item_ids))
    cols["event_timestamp"] = pa.array([ts] * len(item_ids), pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def feast_push(mfs: Any, table: pa.Table) -> None:
    """Embedding rows written by Feast's own ingestion path (``ingest_df``), on any online
    store: what ``OnlineWriter.item_embeddings`` does, without requiring a MOON store."""
    frame = table.to_pandas()
    for name in frame.columns:
        if name.startswith("emb_"):  # Feast's converter wants lists, not numpy arrays
            frame[name] = [np.asarray(v, dtype=np.float32).tolist() for v in frame[name]]
    store = mfs.store
    store._get_provider().ingest_df(store.get_feature_view(ITEM_EMBEDDING_VIEW), frame)
