"""Names, sizes and data locations of the feature store, importable without Feast.

The CLI and the table builders use these without paying Feast's import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

EMBEDDING_DIMS: tuple[int, ...] = (32, 64, 128, 256)
DEFAULT_SEQ_LEN = 50
TIMESTAMP_FIELD = "event_timestamp"
# Feast starts `materialize_incremental` at now - ttl when nothing was materialized yet
# (a known trap), and the point-in-time join drops rows older than ttl: ten years keeps
# synthetic worlds of any date in range while still being a finite ttl.
FEATURE_TTL = timedelta(days=3650)

ITEM_EMBEDDING_VIEW = "item_embedding"
ITEM_ATTRIBUTES_VIEW = "item_attributes"
USER_BEHAVIOUR_VIEW = "user_behaviour"
ITEM_EMBEDDING_PUSH = "new_item_embedding_push"
ITEM_ATTRIBUTES_PUSH = "new_item_attributes_push"
BEHAVIOUR_PUSH = "behaviour_push"

ITEM_STAT_FIELDS: tuple[str, ...] = (
    "n_clicks",
    "n_carts",
    "n_buys",
    "n_impressions",
    "n_impression_clicks",
)
SEQUENCE_FIELDS: tuple[str, ...] = (
    "hist_item_ids",
    "hist_category_ids",
    "hist_actions",
    "hist_ts",
)
EMBEDDING_MANIFEST = "manifest.json"
UNKNOWN_MODEL_VERSION = "unknown"


@dataclass(frozen=True)
class FeatureDataPaths:
    """Absolute locations of the offline feature tables.

    Args:
        item_embeddings: a parquet file or glob of parts (the batch embed job's output).
        item_features: parquet of item attributes/statistics rows.
        user_sequences: parquet of user behaviour sequence rows.
    """

    item_embeddings: str
    item_features: str
    user_sequences: str

    @classmethod
    def from_dir(
        cls, data_dir: str | Path, embeddings_dir: str | Path | None = None
    ) -> FeatureDataPaths:
        """The standard layout: ``DIR/item_features.parquet``, ``DIR/user_sequences.parquet``
        and embedding parts ``E/part-*.parquet`` (E defaults to ``DIR/item_embeddings``)."""
        root = Path(data_dir).expanduser().resolve()
        emb = (
            Path(embeddings_dir).expanduser().resolve()
            if embeddings_dir is not None
            else root / "item_embeddings"
        )
        return cls(
            item_embeddings=str(emb / "part-*.parquet"),
            item_features=str(root / "item_features.parquet"),
            user_sequences=str(root / "user_sequences.parquet"),
        )

    def embeddings_dir(self) -> Path:
        """The folder holding the embedding parts (and the embed job's manifest)."""
        p = Path(self.item_embeddings)
        return p.parent if any(c in p.name for c in "*?[") or p.suffix else p

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureDataPaths:
        return cls(**json.loads(text))


def embeddings_model_version(paths: FeatureDataPaths) -> str:
    """The ``model_version`` recorded by the embed job's manifest, or ``"unknown"``."""
    manifest = paths.embeddings_dir() / EMBEDDING_MANIFEST
    try:
        return str(json.loads(manifest.read_text())["model_version"])
    except (FileNotFoundError, KeyError, ValueError):
        return UNKNOWN_MODEL_VERSION
