"""Names and data locations of the feature store, importable without Feast.

The CLI and the table builders use these without paying Feast's import time. The
embedding view's Matryoshka sizes and model_version are not declared here: they are the
embedding snapshot's (``moon_rec.data.embeddings.EmbeddingSnapshot``, ``paths.snapshot()``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from moon_rec.data.embeddings import UNKNOWN_MODEL_VERSION, EmbeddingSnapshot, embedding_dims
from moon_rec.data.errors import DataError

DEFAULT_SEQ_LEN = 50
TIMESTAMP_FIELD = "event_timestamp"
# Feast starts `materialize_incremental` at now - ttl when nothing was materialized yet
# (a known trap: our ``materialize_views`` starts at the source's first event when that is
# earlier, so a 1997 world loads too), and the point-in-time join drops rows older than ttl
# before the entity's time: ten years keeps worlds of any date in range while still being a
# finite ttl.
FEATURE_TTL = timedelta(days=3650)

ITEM_EMBEDDING_VIEW = "item_embedding"
ITEM_ATTRIBUTES_VIEW = "item_attributes"
USER_BEHAVIOUR_VIEW = "user_behaviour"
# windowed aggregates and entity attributes (moon_rec.featurestore.aggregates)
USER_CLICKS_VIEW = "user_clicks"
USER_CATEGORY_CLICKS_VIEW = "user_category_clicks"
USER_BRAND_CLICKS_VIEW = "user_brand_clicks"
ITEM_CTR_VIEW = "item_ctr"
USER_ATTRIBUTES_VIEW = "user_attributes"
ITEM_EXTRA_ATTRIBUTES_VIEW = "item_extra_attributes"
AGGREGATE_WINDOWS: tuple[int, ...] = (7, 30)  # days
# the join keys of the user x category / brand views: the category / brand of the row's
# target item. Not ``category_id`` / ``brand_id``: those are fields of item_attributes, and a
# join key named like a requested field breaks Feast (historical retrieval: "Duplicate
# column name"; online: the field's value silently replaces the key's)
TARGET_CATEGORY_KEY = "target_category_id"
TARGET_BRAND_KEY = "target_brand_id"
# the views over the aggregate / attribute tables, in materialization order
AGGREGATE_VIEWS: tuple[str, ...] = (
    USER_CLICKS_VIEW,
    USER_CATEGORY_CLICKS_VIEW,
    USER_BRAND_CLICKS_VIEW,
    ITEM_CTR_VIEW,
    USER_ATTRIBUTES_VIEW,
    ITEM_EXTRA_ATTRIBUTES_VIEW,
)
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


@dataclass(frozen=True)
class FeatureDataPaths:
    """Absolute locations of the offline feature tables.

    Args:
        item_embeddings: a parquet file or glob of parts (the batch embed job's output).
        item_features: parquet of item attributes/statistics rows.
        user_sequences: parquet of user behaviour sequence rows.
        aggregates: the folder of the aggregate / attribute tables, one
            ``{view}.parquet`` per view of ``AGGREGATE_VIEWS`` (default: the folder of
            ``item_features``, so paths recorded before them still load).
    """

    item_embeddings: str
    item_features: str
    user_sequences: str
    aggregates: str = ""

    def __post_init__(self) -> None:
        # paths recorded before the aggregate tables existed: they sit beside item_features
        if not self.aggregates:
            object.__setattr__(self, "aggregates", str(Path(self.item_features).parent))

    def table(self, view: str) -> str:
        """The parquet file of aggregate / attribute view ``view`` (``AGGREGATE_VIEWS``):
        ``{aggregates}/{view}.parquet``."""
        if view not in AGGREGATE_VIEWS:
            raise KeyError(f"not an aggregate view: {view}")
        return str(Path(self.aggregates) / f"{view}.parquet")

    @classmethod
    def from_dir(
        cls, data_dir: str | Path, embeddings_dir: str | Path | None = None
    ) -> FeatureDataPaths:
        """The standard layout: ``DIR/item_features.parquet``, ``DIR/user_sequences.parquet``,
        ``DIR/{view}.parquet`` per aggregate view and embedding parts
        ``E/part-*.parquet`` (E defaults to ``DIR/item_embeddings``)."""
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
            aggregates=str(root),
        )

    def embeddings_dir(self) -> Path:
        """The folder holding the embedding parts (and the embed job's manifest)."""
        p = Path(self.item_embeddings)
        return p.parent if any(c in p.name for c in "*?[") or p.suffix else p

    def snapshot(self) -> EmbeddingSnapshot | None:
        """The embedding snapshot these paths serve (None: the embed job has not run)."""
        return EmbeddingSnapshot.find(self.embeddings_dir())

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureDataPaths:
        return cls(**json.loads(text))


def embeddings_model_version(paths: FeatureDataPaths) -> str:
    """The ``model_version`` the embed job's manifest records for the snapshot at
    ``paths``, or ``"unknown"`` when there is none (no snapshot yet, or hand-made parts
    without a manifest: then nothing checks the rows' versions)."""
    snap = paths.snapshot()
    return snap.model_version if snap is not None and snap.has_manifest else UNKNOWN_MODEL_VERSION


def view_dims(view: Any) -> tuple[int, ...]:
    """The Matryoshka sizes an applied ``item_embedding`` view holds (its ``emb_{d}``
    fields): what materialization and pushes write."""
    return embedding_dims([f.name for f in view.features])


def check_view_fits(view: Any, names: list[str], where: str) -> tuple[int, ...]:
    """The view's sizes (``view_dims``), after checking that embedding rows with columns
    ``names`` bring no size the view lacks (it would be dropped silently) and lack none it
    holds. DataError naming ``where`` and the size otherwise."""
    have, want = embedding_dims(names), view_dims(view)
    extra = [d for d in have if d not in want]
    if extra:
        raise DataError(f"Matryoshka size {extra[0]} is not in the applied "
                        f"{ITEM_EMBEDDING_VIEW} view (sizes {list(want)}): run "
                        f"`moon features apply` for this snapshot", file=where,
                        column=f"emb_{extra[0]}")
    missing = [d for d in want if d not in have]
    if missing:
        raise DataError(f"missing column of the embedding rows (the {ITEM_EMBEDDING_VIEW} "
                        f"view holds sizes {list(want)})", file=where, column=f"emb_{missing[0]}")
    return want
