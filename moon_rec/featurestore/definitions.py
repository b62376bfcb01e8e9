"""The Feast objects of the MOON representation center: entities, sources, feature views.

One function builds them all from absolute data paths, so that the ``feature_repo/``
that the ``feast`` CLI reads and the library's programmatic store share one definition.
Relative ``FileSource`` paths resolve against the working directory in Feast's offline
stores (a known trap), so every path here is made absolute.

Feature views (entity, fields):
    item_embedding    item: emb_32, emb_64, emb_128, emb_256 (Array(Float32), each an
                      L2-normalised Matryoshka prefix), semantic_ids (Array(Int32), one
                      codeword per level; when the embed job's snapshot has codes),
                      model_version (String); the view's ``model_version`` tag names the
                      version the store is meant to serve, ``semantic_ids`` the quantiser
                      (``levels x codebook``).
    item_attributes   item: category_id, brand_id, spu_id (Int64), price (Float64),
                      launch_ts (UnixTimestamp), n_clicks, n_carts, n_buys, n_impressions,
                      n_impression_clicks (Int64; counts of events strictly before the
                      row's timestamp).
    user_behaviour    user: hist_item_ids, hist_category_ids (Array(Int64)), hist_actions
                      (Array(String)), hist_ts (Array(UnixTimestamp)): the last L behaviours
                      strictly before the row's timestamp, most recent first; seq_len (Int64).
Push sources: ``new_item_embedding_push``, ``new_item_attributes_push`` (new items on
arrival) and ``behaviour_push`` (fresh behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Float64, Int32, Int64, String, UnixTimestamp

from moon_rec.data.embeddings import SEMANTIC_IDS, emb_column
from moon_rec.featurestore.layout import (
    BEHAVIOUR_PUSH,
    DEFAULT_SEQ_LEN,
    FEATURE_TTL,
    ITEM_ATTRIBUTES_PUSH,
    ITEM_ATTRIBUTES_VIEW,
    ITEM_EMBEDDING_PUSH,
    ITEM_EMBEDDING_VIEW,
    ITEM_STAT_FIELDS,
    SEQUENCE_FIELDS,
    TIMESTAMP_FIELD,
    UNKNOWN_MODEL_VERSION,
    USER_BEHAVIOUR_VIEW,
    FeatureDataPaths,
    embeddings_model_version,
)

__all__ = [
    "BEHAVIOUR_PUSH",
    "DEFAULT_SEQ_LEN",
    "FEATURE_TTL",
    "ITEM_ATTRIBUTES_PUSH",
    "ITEM_ATTRIBUTES_VIEW",
    "ITEM_EMBEDDING_PUSH",
    "ITEM_EMBEDDING_VIEW",
    "ITEM_STAT_FIELDS",
    "SEQUENCE_FIELDS",
    "TIMESTAMP_FIELD",
    "UNKNOWN_MODEL_VERSION",
    "USER_BEHAVIOUR_VIEW",
    "FeatureDataPaths",
    "FeatureDefinitions",
    "build_definitions",
    "embeddings_model_version",
    "embeddings_semantic_ids",
    "snapshot_dims",
]


def embeddings_semantic_ids(paths: FeatureDataPaths) -> dict[str, object] | None:
    """The semantic-ID quantiser the snapshot at ``paths`` records (levels, codebook, dim,
    ...), or None: a snapshot without codes, or none yet."""
    snap = paths.snapshot()
    return dict(snap.quantiser) if snap is not None and snap.quantiser else None


def snapshot_dims(paths: FeatureDataPaths) -> tuple[int, ...]:
    """The Matryoshka sizes the embedding view holds: the snapshot's, or, before the embed
    job has run, the encoder config's default sizes (the one place they are declared)."""
    snap = paths.snapshot()
    if snap is not None:
        return snap.dims
    from moon_rec.encoders.config import EncoderConfig

    return tuple(EncoderConfig().dims)


@dataclass(frozen=True)
class FeatureDefinitions:
    """Every Feast object of the repository (see the module docstring)."""

    item: Entity
    user: Entity
    item_embedding_source: FileSource
    item_attributes_source: FileSource
    user_behaviour_source: FileSource
    item_embedding_push: PushSource
    item_attributes_push: PushSource
    behaviour_push: PushSource
    item_embedding: FeatureView
    item_attributes: FeatureView
    user_behaviour: FeatureView

    def objects(self) -> list[object]:
        """All objects, in the order ``FeatureStore.apply`` takes them."""
        return [getattr(self, name) for name in self.__dataclass_fields__]


def build_definitions(
    paths: FeatureDataPaths,
    *,
    model_version: str | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    dims: tuple[int, ...] | None = None,
    semantic_ids: bool | None = None,
) -> FeatureDefinitions:
    """Build the entities, sources and feature views over ``paths``.

    Args:
        paths: absolute data locations (relative ones are resolved here, never by Feast).
        model_version: the encoder version the embedding view serves (its tag); default:
            read from the embed job's manifest.
        seq_len: L, the maximum behaviour sequence length (a tag of the behaviour view).
        dims: the Matryoshka sizes, one ``emb_{d}`` field each; default: the snapshot's
            (``snapshot_dims``).
        semantic_ids: give the embedding view a ``semantic_ids`` field; default: when the
            snapshot records a quantiser.
    """
    if model_version is None:
        model_version = embeddings_model_version(paths)
    if dims is None:
        dims = snapshot_dims(paths)
    sid = embeddings_semantic_ids(paths)
    if semantic_ids is None:
        semantic_ids = sid is not None
    sid_tag = f"{sid['levels']}x{sid['codebook']}" if semantic_ids and sid else ""
    item = Entity(
        name="item",
        join_keys=["item_id"],
        value_type=ValueType.INT64,
        description="a catalog item",
    )
    user = Entity(
        name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="a user"
    )

    def source(name: str, path: str) -> FileSource:
        return FileSource(
            name=name,
            path=str(Path(path).expanduser().absolute()),
            file_format=ParquetFormat(),
            timestamp_field=TIMESTAMP_FIELD,
        )

    emb_src = source("item_embedding_parquet", paths.item_embeddings)
    attr_src = source("item_attributes_parquet", paths.item_features)
    seq_src = source("user_behaviour_parquet", paths.user_sequences)
    emb_push = PushSource(name=ITEM_EMBEDDING_PUSH, batch_source=emb_src)
    attr_push = PushSource(name=ITEM_ATTRIBUTES_PUSH, batch_source=attr_src)
    seq_push = PushSource(name=BEHAVIOUR_PUSH, batch_source=seq_src)

    item_embedding = FeatureView(
        name=ITEM_EMBEDDING_VIEW,
        entities=[item],
        ttl=FEATURE_TTL,
        schema=[Field(name=emb_column(d), dtype=Array(Float32)) for d in dims]
        + ([Field(name=SEMANTIC_IDS, dtype=Array(Int32))] if semantic_ids else [])
        + [Field(name="model_version", dtype=String)],
        source=emb_push,
        online=True,
        tags={
            "model_version": model_version,
            "dims": ",".join(str(d) for d in dims),
            **({SEMANTIC_IDS: sid_tag} if semantic_ids else {}),
        },
        description="MOON product (title + image) embeddings, one field per Matryoshka size",
    )
    item_attributes = FeatureView(
        name=ITEM_ATTRIBUTES_VIEW,
        entities=[item],
        ttl=FEATURE_TTL,
        schema=[
            Field(name="category_id", dtype=Int64),
            Field(name="brand_id", dtype=Int64),
            Field(name="spu_id", dtype=Int64),
            Field(name="price", dtype=Float64),
            Field(name="launch_ts", dtype=UnixTimestamp),
        ]
        + [Field(name=f, dtype=Int64) for f in ITEM_STAT_FIELDS],
        source=attr_push,
        online=True,
        description="item attributes and event counts strictly before each row's time",
    )
    user_behaviour = FeatureView(
        name=USER_BEHAVIOUR_VIEW,
        entities=[user],
        ttl=FEATURE_TTL,
        schema=[
            Field(name="hist_item_ids", dtype=Array(Int64)),
            Field(name="hist_category_ids", dtype=Array(Int64)),
            Field(name="hist_actions", dtype=Array(String)),
            Field(name="hist_ts", dtype=Array(UnixTimestamp)),
            Field(name="seq_len", dtype=Int64),
        ],
        source=seq_push,
        online=True,
        tags={"max_len": str(seq_len)},
        description="the user's last L behaviours strictly before each row's time, most recent first",
    )
    return FeatureDefinitions(
        item=item,
        user=user,
        item_embedding_source=emb_src,
        item_attributes_source=attr_src,
        user_behaviour_source=seq_src,
        item_embedding_push=emb_push,
        item_attributes_push=attr_push,
        behaviour_push=seq_push,
        item_embedding=item_embedding,
        item_attributes=item_attributes,
        user_behaviour=user_behaviour,
    )
