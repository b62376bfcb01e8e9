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
    user_clicks       user: user_clicks_7d, user_clicks_30d (Int64), user_last_click_ts
                      (UnixTimestamp): daily snapshots, see below.
    user_category_clicks  user x target_category (join keys user_id, target_category_id:
                      the category of the row's target item; not ``category_id``, a field
                      of item_attributes): user_category_clicks_{7,30}d (Int64),
                      user_category_share_{7,30}d (Float64).
    user_brand_clicks user x target_brand (user_id, target_brand_id):
                      user_brand_clicks_{7,30}d,
                      user_brand_share_{7,30}d.
    item_ctr          item: item_impressions_{7,30}d, item_clicks_{7,30}d (Int64),
                      item_ctr_{7,30}d (Float64, Beta-prior smoothed; the prior's a, b in
                      the view's tags).
    user_attributes   user: signup_ts (UnixTimestamp) and every typed extra column of the
                      users table (Int64 / Float64 / String / Bool), at signup_ts.
    item_extra_attributes  item: the items' typed extra columns, at launch_ts; defined
                      only when the items have extra columns.
The windowed views are daily snapshots (``moon_rec.featurestore.aggregates``): a row
stamped at the day boundary D holds the window [D - w, D), so a row stamped t summarises
only events strictly before t. Their schemas (extra columns, the CTR prior) are read from
the built tables when they exist.
Push sources: ``new_item_embedding_push``, ``new_item_attributes_push`` (new items on
arrival) and ``behaviour_push`` (fresh behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

from moon_rec.data.embeddings import SEMANTIC_IDS, emb_column
from moon_rec.featurestore.layout import (
    AGGREGATE_VIEWS,
    AGGREGATE_WINDOWS,
    BEHAVIOUR_PUSH,
    DEFAULT_SEQ_LEN,
    FEATURE_TTL,
    ITEM_ATTRIBUTES_PUSH,
    ITEM_ATTRIBUTES_VIEW,
    ITEM_CTR_VIEW,
    ITEM_EMBEDDING_PUSH,
    ITEM_EMBEDDING_VIEW,
    ITEM_EXTRA_ATTRIBUTES_VIEW,
    ITEM_STAT_FIELDS,
    SEQUENCE_FIELDS,
    TARGET_BRAND_KEY,
    TARGET_CATEGORY_KEY,
    TIMESTAMP_FIELD,
    UNKNOWN_MODEL_VERSION,
    USER_ATTRIBUTES_VIEW,
    USER_BEHAVIOUR_VIEW,
    USER_BRAND_CLICKS_VIEW,
    USER_CATEGORY_CLICKS_VIEW,
    USER_CLICKS_VIEW,
    FeatureDataPaths,
    embeddings_model_version,
)

__all__ = [
    "AGGREGATE_VIEWS",
    "BEHAVIOUR_PUSH",
    "DEFAULT_SEQ_LEN",
    "FEATURE_TTL",
    "ITEM_ATTRIBUTES_PUSH",
    "ITEM_ATTRIBUTES_VIEW",
    "ITEM_EMBEDDING_PUSH",
    "ITEM_EMBEDDING_VIEW",
    "ITEM_STAT_FIELDS",
    "SEQUENCE_FIELDS",
    "TARGET_BRAND_KEY",
    "TARGET_CATEGORY_KEY",
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
    category: Entity
    brand: Entity
    user_clicks: FeatureView
    user_category_clicks: FeatureView
    user_brand_clicks: FeatureView
    item_ctr: FeatureView
    user_attributes: FeatureView
    item_extra_attributes: FeatureView | None  # None: the items have no extra column

    def objects(self) -> list[object]:
        """All objects, in the order ``FeatureStore.apply`` takes them."""
        objs = [getattr(self, name) for name in self.__dataclass_fields__]
        return [o for o in objs if o is not None]

    def views(self) -> dict[str, FeatureView]:
        """The feature views by name."""
        return {o.name: o for o in self.objects() if isinstance(o, FeatureView)}


# pyarrow types of the attribute tables' columns -> Feast types
_FEAST_TYPES: list[tuple[pa.DataType, Any]] = [
    (pa.int64(), Int64),
    (pa.float64(), Float64),
    (pa.string(), String),
    (pa.bool_(), Bool),
    (pa.timestamp("us", tz="UTC"), UnixTimestamp),
]


def feast_type(type_: pa.DataType, where: str) -> Any:
    """The Feast type of an attribute column (``EXTRA_TYPES`` and timestamps)."""
    for arrow, feast_t in _FEAST_TYPES:
        if type_.equals(arrow):
            return feast_t
    raise ValueError(f"{where}: column type {type_} has no Feast type here "
                     f"(known: {', '.join(str(a) for a, _ in _FEAST_TYPES)})")


def _table_schema(path: str) -> pa.Schema | None:
    """The schema of a built table, None before the batch job has written it."""
    return pq.read_schema(path) if Path(path).is_file() else None


def _attribute_fields(schema: pa.Schema | None, keys: tuple[str, ...], path: str) -> list[Field]:
    if schema is None:
        return []
    skip = {*keys, TIMESTAMP_FIELD}
    return [Field(name=f.name, dtype=feast_type(f.type, f"{path}: {f.name}"))
            for f in schema if f.name not in skip]


def aggregate_views(
    paths: FeatureDataPaths, user: Entity, item: Entity, category: Entity, brand: Entity,
    source: Any,
) -> dict[str, FeatureView | None]:
    """The aggregate and attribute views over ``paths.table(view)`` (see the module
    docstring); ``item_extra_attributes`` None when the built items have no extra column."""
    windows = AGGREGATE_WINDOWS
    daily = ("daily snapshot: the row stamped at day boundary D holds the window [D - w, D) "
             "(events strictly before D); ")

    def view(name: str, entities: list[Entity], schema: list[Field], description: str,
             tags: dict[str, str] | None = None) -> FeatureView:
        return FeatureView(name=name, entities=entities, ttl=FEATURE_TTL, schema=schema,
                           source=source(f"{name}_parquet", paths.table(name)), online=True,
                           tags={"windows_days": ",".join(map(str, windows)), **(tags or {})},
                           description=description)

    def pair(kind: str, entity: Entity) -> FeatureView:
        return view(
            f"user_{kind}_clicks", [user, entity],
            [Field(name=f"user_{kind}_clicks_{w}d", dtype=Int64) for w in windows]
            + [Field(name=f"user_{kind}_share_{w}d", dtype=Float64) for w in windows],
            daily + f"the user's clicks on the {kind} (join keys user_id, target_{kind}_id: "
            f"the target item's {kind}_id) and their share of the user's clicks in the window;"
            " no row: 0",
        )

    ctr_schema = _table_schema(paths.table(ITEM_CTR_VIEW))
    meta = {k.decode(): v.decode() for k, v in ((ctr_schema.metadata or {}) if ctr_schema
                                                  else {}).items() if k.startswith(b"prior_")}
    user_attr_path = paths.table(USER_ATTRIBUTES_VIEW)
    item_extra_path = paths.table(ITEM_EXTRA_ATTRIBUTES_VIEW)
    user_extra = _attribute_fields(_table_schema(user_attr_path), ("user_id", "signup_ts"),
                                   user_attr_path)
    item_extra = _attribute_fields(_table_schema(item_extra_path), ("item_id",), item_extra_path)
    return {
        USER_CLICKS_VIEW: view(
            USER_CLICKS_VIEW, [user],
            [Field(name=f"user_clicks_{w}d", dtype=Int64) for w in windows]
            + [Field(name="user_last_click_ts", dtype=UnixTimestamp)],
            daily + "the user's clicks (behaviours) in the window, and the time of the last "
            "click strictly before the row's time (recency = request ts - "
            "user_last_click_ts, computed by the consumer; null: no click yet)",
        ),
        USER_CATEGORY_CLICKS_VIEW: pair("category", category),
        USER_BRAND_CLICKS_VIEW: pair("brand", brand),
        ITEM_CTR_VIEW: view(
            ITEM_CTR_VIEW, [item],
            [Field(name=f"item_{n}_{w}d", dtype=Int64) for w in windows
             for n in ("impressions", "clicks")]
            + [Field(name=f"item_ctr_{w}d", dtype=Float64) for w in windows],
            daily + "the item's impressions, clicked impressions and CTR smoothed by a "
            "Beta(a, b) prior: (clicks + a) / (impressions + a + b), a = m p0, b = m (1 - p0), "
            "p0 the train-period CTR (tags prior_*)",
            tags=meta,
        ),
        USER_ATTRIBUTES_VIEW: view(
            USER_ATTRIBUTES_VIEW, [user],
            [Field(name="signup_ts", dtype=UnixTimestamp), *user_extra],
            "the user's signup time and the users table's typed extra columns, at signup_ts",
        ),
        ITEM_EXTRA_ATTRIBUTES_VIEW: view(
            ITEM_EXTRA_ATTRIBUTES_VIEW, [item], item_extra,
            "the items table's typed extra columns, at launch_ts",
        ) if item_extra else None,
    }


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
    category = Entity(name="target_category", join_keys=[TARGET_CATEGORY_KEY],
                      value_type=ValueType.INT64,
                      description="the category of a row's target item (user x category views)")
    brand = Entity(name="target_brand", join_keys=[TARGET_BRAND_KEY], value_type=ValueType.INT64,
                   description="the brand of a row's target item (user x brand views)")

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
    agg = aggregate_views(paths, user, item, category, brand, source)
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
        category=category,
        brand=brand,
        user_clicks=agg[USER_CLICKS_VIEW],  # type: ignore[arg-type]
        user_category_clicks=agg[USER_CATEGORY_CLICKS_VIEW],  # type: ignore[arg-type]
        user_brand_clicks=agg[USER_BRAND_CLICKS_VIEW],  # type: ignore[arg-type]
        item_ctr=agg[ITEM_CTR_VIEW],  # type: ignore[arg-type]
        user_attributes=agg[USER_ATTRIBUTES_VIEW],  # type: ignore[arg-type]
        item_extra_attributes=agg[ITEM_EXTRA_ATTRIBUTES_VIEW],
    )
