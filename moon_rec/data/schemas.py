"""The data contracts of DESIGN.md section 3, as pyarrow schemas plus value rules.

Every table is parquet, timestamps are ``timestamp[us, UTC]`` and IDs are int64. A world
directory holds one file per table (``items.parquet``) or a folder of parts for large
worlds (``items/part-00000.parquet``). Synthetic-only columns are prefixed ``oracle_`` and
are never used as features. ``users`` and ``items`` also take *extra* columns, the typed
attributes a real source brings (age, club status, colour group, ...), kept by the importers
for the ranker's feature spec to read: a name of lower-case letters, digits and ``_`` that
is no contract column and not ``oracle_*``, of type int64, float64, string or bool, nulls
allowed. Any other unknown column is an error.

Tables:
    items          item_id, category_id, brand_id, title, attributes, price, launch_ts,
                   image (PNG bytes; null for a text-only item), spu_id
    image_queries  query_id, item_id, ts, image (PNG bytes)
    users          user_id, signup_ts
    behaviors      user_id, item_id, ts, action (click|cart|buy), query_text,
                   query_image_id (nullable)
    impressions    request_id, user_id, ts, query_text, item_id, position, clicked (0/1)
    categories     category_id, parent_id (nullable), name, look_driven  -- optional table,
                   an addition to DESIGN section 3: which categories are "look-driven"
                   (fashion) is needed to report metrics per category group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
# Types an extra column of ``users`` / ``items`` may have (by the names a mapping uses).
EXTRA_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
ACTIONS: tuple[str, ...] = ("click", "cart", "buy")
ORACLE_PREFIX = "oracle_"


def attribute_values(attributes: list[str] | tuple[str, ...], key: str) -> np.ndarray:
    """[N] str: the value of ``key`` in each item's ``attributes`` (``"color: navy;
    pattern: dots"``: ``key: value`` fields joined by ``;``), ``""`` where an item does
    not state it.

    Example:
        >>> attribute_values(["color: navy; pattern: dots", "pattern: grid"], "color").tolist()
        ['navy', '']
    """
    out = []
    for text in attributes:
        value = ""
        for field_ in (text or "").split(";"):
            k, sep, v = field_.partition(":")
            if sep and k.strip() == key:
                value = v.strip()
                break
        out.append(value)
    return np.asarray(out, dtype=object).astype(str)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table contract.

    Args:
        name: column name.
        type: the exact pyarrow type required.
        nullable: whether nulls are allowed.
        min_value / max_value: inclusive numeric bounds (None: unbounded).
        allowed: the allowed string values (None: any).
        non_empty: strings must have at least one non-blank character.
        image: the column holds encoded PNG/JPEG bytes that must decode.
        unique: values must be unique over the whole table.
    """

    name: str
    type: pa.DataType
    nullable: bool = False
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None
    non_empty: bool = False
    image: bool = False
    unique: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A table contract: its columns, in order, and whether the world must have it."""

    name: str
    columns: tuple[ColumnSpec, ...]
    required: bool = True
    extras: bool = False  # whether typed extra columns (EXTRA_TYPES) are allowed
    doc: str = ""
    references: dict[str, str] = field(default_factory=dict)  # column -> "table.column"

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _id(name: str, *, unique: bool = False, nullable: bool = False) -> ColumnSpec:
    return ColumnSpec(name, pa.int64(), nullable=nullable, min_value=0, unique=unique)


ITEMS = TableSpec(
    "items",
    (
        _id("item_id", unique=True),
        _id("category_id"),
        _id("brand_id"),
        ColumnSpec("title", pa.string(), non_empty=True),
        ColumnSpec("attributes", pa.string()),
        ColumnSpec("price", pa.float64(), min_value=0.0),
        ColumnSpec("launch_ts", TIMESTAMP),
        # null for a text-only catalog (MovieLens): every step then works on the text
        ColumnSpec("image", pa.binary(), nullable=True, image=True),
        _id("spu_id"),
    ),
    extras=True,
    doc="the catalog: one row per item, with its photo (null: a text-only item)",
)

IMAGE_QUERIES = TableSpec(
    "image_queries",
    (
        _id("query_id", unique=True),
        _id("item_id"),
        ColumnSpec("ts", TIMESTAMP),
        ColumnSpec("image", pa.binary(), image=True),
    ),
    doc="user photos of catalog items (the queries of image-based search recall)",
    references={"item_id": "items.item_id"},
)

USERS = TableSpec(
    "users",
    (_id("user_id", unique=True), ColumnSpec("signup_ts", TIMESTAMP)),
    extras=True,
    doc="one row per user (plus typed extra columns: age, club status, ...)",
)

BEHAVIORS = TableSpec(
    "behaviors",
    (
        _id("user_id"),
        _id("item_id"),
        ColumnSpec("ts", TIMESTAMP),
        ColumnSpec("action", pa.string(), allowed=ACTIONS),
        ColumnSpec("query_text", pa.string()),
        _id("query_image_id", nullable=True),
    ),
    doc="clicks, carts and buys: the behaviour sequences and the post-training pairs",
    references={
        "user_id": "users.user_id",
        "item_id": "items.item_id",
        "query_image_id": "image_queries.query_id",
    },
)

IMPRESSIONS = TableSpec(
    "impressions",
    (
        _id("request_id"),
        _id("user_id"),
        ColumnSpec("ts", TIMESTAMP),
        ColumnSpec("query_text", pa.string()),
        _id("item_id"),
        ColumnSpec("position", pa.int32(), min_value=0),
        ColumnSpec("clicked", pa.int8(), min_value=0, max_value=1),
    ),
    doc="what was shown to whom and whether it was clicked: the CTR labels",
    references={"user_id": "users.user_id", "item_id": "items.item_id"},
)

CATEGORIES = TableSpec(
    "categories",
    (
        _id("category_id", unique=True),
        _id("parent_id", nullable=True),
        ColumnSpec("name", pa.string(), non_empty=True),
        ColumnSpec("look_driven", pa.bool_()),
    ),
    required=False,
    doc="the category tree and which categories are look-driven (optional)",
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (ITEMS, IMAGE_QUERIES, USERS, BEHAVIORS, IMPRESSIONS, CATEGORIES)
}

# Types of the synthetic-only columns, so that generated files are stable and documented.
# They are the click model's inputs (moon_rec.data.click_model, which reads them back):
#   items        colour / pattern / shape / material / price-tier indices, quality, the
#                unit style (look) vector and the item's brand vector (brand affinity)
#   users        taste at t = 0 and its drift over the period, the preference per leaf
#                category (in category_id order), brand and price preferences, click bias
#   impressions  the click probability and its style term, and the query's intent: the
#                colour index and brand_id it names and, for an image query, the item_id
#                photographed (null: no such intent; image queries keep a colour / brand
#                intent that their empty text does not show)
ORACLE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "items": {
        "oracle_color": pa.int32(),
        "oracle_pattern": pa.int32(),
        "oracle_shape": pa.int32(),
        "oracle_material": pa.int32(),
        "oracle_price_tier": pa.int32(),
        "oracle_quality": pa.float32(),
        "oracle_style": pa.list_(pa.float32()),
        "oracle_brand_vec": pa.list_(pa.float32()),
    },
    "image_queries": {},
    "users": {
        "oracle_taste": pa.list_(pa.float32()),
        "oracle_category_pref": pa.list_(pa.float32()),
        "oracle_brand_pref": pa.list_(pa.float32()),
        "oracle_price_pref": pa.float32(),
        "oracle_bias": pa.float32(),
        "oracle_taste_drift": pa.list_(pa.float32()),
    },
    "behaviors": {},
    "impressions": {
        "oracle_p_click": pa.float32(),
        "oracle_logit_style": pa.float32(),
        "oracle_query_color": pa.int32(),
        "oracle_query_brand_id": pa.int64(),
        "oracle_query_item_id": pa.int64(),
    },
    "categories": {},
}


def extra_column_problem(name: str, column: str, type_: pa.DataType) -> str | None:
    """Why ``column`` of type ``type_`` cannot be an extra column of table ``name``, or
    None when it can (see the module docstring)."""
    spec = TABLES[name]
    if not spec.extras:
        return (f"unknown column for table '{name}' (only contract columns and "
                f"'{ORACLE_PREFIX}*' columns are allowed)")
    if any(c.name == column for c in spec.columns):
        return f"'{column}' is a contract column of table '{name}'"
    if column.startswith(ORACLE_PREFIX) or not EXTRA_NAME.fullmatch(column):
        return (f"extra column name {column!r} must be lower-case letters, digits and '_' "
                f"(starting with a letter, not '{ORACLE_PREFIX}')")
    if not any(type_.equals(t) for t in EXTRA_TYPES.values()):
        return (f"extra column of type {type_}; extra columns of table '{name}' are "
                f"{', '.join(EXTRA_TYPES)}")
    return None


def full_schema(name: str, with_oracle: bool = True) -> pa.Schema:
    """The contract schema of table ``name``, plus its synthetic ``oracle_`` columns."""
    spec = TABLES[name]
    fields = list(spec.schema)
    if with_oracle:
        fields += [pa.field(k, v) for k, v in ORACLE_COLUMNS[name].items()]
    return pa.schema(fields)
