"""The synthetic world's click model: the one place that says how a click happens.

Per impression of item i (category c, brand b) to user u at time t, at position p:

    logit = bias + user_bias[u]
          + w_style[c] * STYLE_SCALE * <taste_u(t), style_i>   style: the look
          + w_brand[c] * <brand_pref_u, brand_vec[b]>          brand affinity
          - w_price[c] * |price_tier_i - price_pref_u|         price affinity
          + w_cat * log(category_pref_u[c] * n_categories)     category interest
          + w_quality * quality_i                              quality
          + query_color + query_brand + query_image            what the query asked for
          - position_decay * p * (1 + 0.5 * log(1 + p))        position
    p_click = sigmoid(logit)

``taste_u(t) = unit(taste_u + taste_drift_u * t)`` with t the request time as a fraction of
the period (0: first day, 1: last). ``w_*[c]`` is ``w_*_look`` in look-driven categories,
``w_*_other`` elsewhere (:class:`~moon_rec.data.world_config.WorldConfig`). A query that
names a colour (brand) adds ``MATCH`` to items of that colour (brand) and ``MISS`` to the
others; an image query adds ``IMAGE_TARGET`` to the photographed item, ``IMAGE_SPU`` to the
other variants of its SPU and ``IMAGE_OTHER`` to the rest. Image-query requests keep the
colour / brand intent they drew (their text is empty, so no ranker can see it).

:func:`click_terms` computes every term from :class:`ImpressionInputs`; the generator
(:mod:`moon_rec.data.world`) builds those inputs from its in-memory state and draws the
clicks from :func:`p_click`, and :func:`read_oracle` rebuilds them from a generated world's
tables (the ``oracle_`` columns, looked up by id) for the diagnostics
(:mod:`moon_rec.ranking.diagnostics`), so both run the same arithmetic.

Example::

    oracle = read_oracle("artifacts/world")
    imp = read_table("artifacts/world", "impressions", IMPRESSION_COLUMNS)
    terms = click_terms(oracle.cfg, oracle.inputs(imp))
    p = p_click(oracle.cfg, terms)          # == oracle_p_click (float32 storage aside)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.rows import RowIndex
from moon_rec.data.validation import table_files
from moon_rec.data.world_config import EPOCH, WorldConfig

STYLE_SCALE = 2.0
MATCH, MISS = 1.2, -0.4
IMAGE_TARGET, IMAGE_SPU, IMAGE_OTHER = 2.5, 1.0, -0.3
NONE = -1  # no colour / brand / image in the query

# What oracle.inputs() reads of the impressions table.
IMPRESSION_COLUMNS: list[str] = [
    "user_id", "item_id", "ts", "position", "oracle_query_color", "oracle_query_brand_id",
    "oracle_query_item_id",
]


@dataclass(frozen=True)
class ImpressionInputs:
    """Everything the click model reads about N impressions (arrays [N] unless noted).

    ``item`` / ``query_item`` and ``brand`` / ``query_brand`` only need to share a key
    space (the generator passes catalog rows and brand indices, :meth:`WorldOracle.inputs`
    ids); ``NONE`` (-1) marks a query without that intent.
    """

    position: np.ndarray  # int, 0 = top
    t_frac: np.ndarray  # request time as a fraction of the period
    look: np.ndarray  # bool: the item's category is look-driven
    user_bias: np.ndarray
    taste: np.ndarray  # [N, style_dim], the user's taste at t = 0 (unit)
    taste_drift: np.ndarray  # [N, style_dim]
    category_pref: np.ndarray  # the user's preference for the item's category (sums to 1)
    n_categories: int  # leaf categories
    brand_pref: np.ndarray  # [N, 4]
    price_pref: np.ndarray
    item: np.ndarray
    spu: np.ndarray
    style: np.ndarray  # [N, style_dim], the item's look (unit)
    brand: np.ndarray
    brand_vec: np.ndarray  # [N, 4], the item's brand
    color: np.ndarray
    price_tier: np.ndarray
    quality: np.ndarray
    query_color: np.ndarray
    query_brand: np.ndarray
    query_item: np.ndarray  # the image query's photographed item
    query_spu: np.ndarray  # its SPU (any value where query_item is NONE)


@dataclass(frozen=True)
class ClickTerms:
    """The terms of the click logit, arrays [N] (the constant ``bias`` aside), each as it
    enters the sum (weights applied, the price and position terms negative)."""

    user_bias: np.ndarray
    style: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    category: np.ndarray
    quality: np.ndarray
    query_color: np.ndarray
    query_brand: np.ndarray
    query_image: np.ndarray
    position: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def taste_at(taste: np.ndarray, drift: np.ndarray, t_frac: np.ndarray) -> np.ndarray:
    """Users' visual taste at time fraction ``t_frac`` [N]: unit(taste + drift * t), [N, d]."""
    return unit(taste + drift * t_frac[:, None])


def click_terms(cfg: WorldConfig, x: ImpressionInputs) -> ClickTerms:
    """Every term of the click logit of impressions ``x`` (module docstring)."""
    w_style = np.where(x.look, cfg.w_style_look, cfg.w_style_other)
    w_brand = np.where(x.look, cfg.w_brand_look, cfg.w_brand_other)
    w_price = np.where(x.look, cfg.w_price_look, cfg.w_price_other)
    affinity = (taste_at(x.taste, x.taste_drift, x.t_frac) * x.style).sum(1) * STYLE_SCALE
    pos = x.position
    return ClickTerms(
        user_bias=x.user_bias,
        style=w_style * affinity,
        brand=w_brand * (x.brand_pref * x.brand_vec).sum(1),
        price=w_price * -np.abs(x.price_tier - x.price_pref),
        category=cfg.w_cat * np.log(x.category_pref * x.n_categories),
        quality=cfg.w_quality * x.quality,
        query_color=np.where(
            x.query_color != NONE, np.where(x.color == x.query_color, MATCH, MISS), 0.0
        ),
        query_brand=np.where(
            x.query_brand != NONE, np.where(x.brand == x.query_brand, MATCH, MISS), 0.0
        ),
        query_image=np.where(
            x.query_item != NONE,
            np.where(
                x.item == x.query_item, IMAGE_TARGET,
                np.where(x.spu == x.query_spu, IMAGE_SPU, IMAGE_OTHER),
            ),
            0.0,
        ),
        position=-(cfg.position_decay * pos * (1.0 + 0.5 * np.log1p(pos))),
    )


def click_logit(cfg: WorldConfig, t: ClickTerms) -> np.ndarray:
    """The logit [N]: ``cfg.bias`` plus every term (summed in a fixed order, so the same
    inputs give the same bits)."""
    query = t.query_color + t.query_brand + t.query_image
    return (
        cfg.bias + t.user_bias + t.style + t.brand + t.price + t.category + t.quality + query
        + t.position
    )


def p_click(cfg: WorldConfig, t: ClickTerms) -> np.ndarray:
    """The click probability [N], sigmoid(:func:`click_logit`)."""
    return 1.0 / (1.0 + np.exp(-click_logit(cfg, t)))


# --------------------------------------------------------------------------------------
# the same inputs, read back from a generated world's tables


@dataclass(frozen=True)
class ItemOracle:
    """The catalog's hidden truth, one row per item in ``item_id`` order (arrays [n])."""

    item_id: np.ndarray
    category_index: np.ndarray  # leaf index into users' category_pref
    look: np.ndarray
    brand_id: np.ndarray
    spu_id: np.ndarray
    color: np.ndarray
    price_tier: np.ndarray
    quality: np.ndarray
    style: np.ndarray  # [n, style_dim]
    brand_vec: np.ndarray  # [n, 4]
    launch_us: np.ndarray


@dataclass(frozen=True)
class UserOracle:
    """The users' hidden truth, one row per user in ``user_id`` order (arrays [n])."""

    user_id: np.ndarray
    bias: np.ndarray
    taste: np.ndarray  # [n, style_dim]
    taste_drift: np.ndarray  # [n, style_dim]
    category_pref: np.ndarray  # [n, n_categories]
    brand_pref: np.ndarray  # [n, 4]
    price_pref: np.ndarray


def _rows_of(sorted_ids: np.ndarray, ids: np.ndarray, table: str, column: str) -> np.ndarray:
    """Row of each id in ``sorted_ids``; DataError naming the first unknown id."""
    return RowIndex(sorted_ids, is_sorted=True).require(ids, what=table, column=column)


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    """A list<float32> column as a float64 matrix [n, k]."""
    arr = pc.list_flatten(table.column(column).combine_chunks()).to_numpy(zero_copy_only=False)
    return arr.astype(np.float64).reshape(table.num_rows, -1)


def _ids_or_none(col: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(col, NONE).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class WorldOracle:
    """A generated world's config and hidden truth, read from its tables by id."""

    cfg: WorldConfig
    items: ItemOracle
    users: UserOracle

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        return _rows_of(self.items.item_id, np.asarray(item_ids), "items", "item_id")

    def user_rows(self, user_ids: np.ndarray) -> np.ndarray:
        return _rows_of(self.users.user_id, np.asarray(user_ids), "users", "user_id")

    def inputs(self, impressions: pa.Table) -> ImpressionInputs:
        """The click model's inputs for ``impressions`` (needs ``IMPRESSION_COLUMNS``)."""
        missing = [c for c in IMPRESSION_COLUMNS if c not in impressions.column_names]
        if missing:
            raise DataError(f"missing (a world generated before these columns existed: "
                            f"regenerate it): {missing}", file="impressions", column=missing[0])
        it, us = self.items, self.users
        i = self.item_rows(impressions.column("item_id").to_numpy())
        u = self.user_rows(impressions.column("user_id").to_numpy())
        pos = impressions.column("position").to_numpy().astype(np.int64)
        start, end = int(EPOCH.timestamp() * 1e6), int(self.cfg.end.timestamp() * 1e6)
        # impressions are logged at the request time + position microseconds
        request_us = pc.cast(impressions.column("ts"), pa.int64()).to_numpy() - pos
        q_item = _ids_or_none(impressions.column("oracle_query_item_id"))
        has_q = q_item != NONE
        q_spu = np.full(len(q_item), NONE, np.int64)
        q_spu[has_q] = it.spu_id[self.item_rows(q_item[has_q])]
        return ImpressionInputs(
            position=pos,
            t_frac=(request_us - start) / (end - start),
            look=it.look[i],
            user_bias=us.bias[u],
            taste=us.taste[u],
            taste_drift=us.taste_drift[u],
            category_pref=us.category_pref[u, it.category_index[i]],
            n_categories=us.category_pref.shape[1],
            brand_pref=us.brand_pref[u],
            price_pref=us.price_pref[u],
            item=it.item_id[i],
            spu=it.spu_id[i],
            style=it.style[i],
            brand=it.brand_id[i],
            brand_vec=it.brand_vec[i],
            color=it.color[i],
            price_tier=it.price_tier[i],
            quality=it.quality[i],
            query_color=_ids_or_none(impressions.column("oracle_query_color")),
            query_brand=_ids_or_none(impressions.column("oracle_query_brand_id")),
            query_item=q_item,
            query_spu=q_spu,
        )


def read_oracle(world: str | Path) -> WorldOracle:
    """The config (``world.json``) and hidden truth (``oracle_`` columns of items, users and
    categories) of a generated world, indexed by id.

    Raises:
        DataError: not a generated world (a missing ``oracle_`` column or ``config``).
    """
    meta = read_world_meta(world)
    if "config" not in meta:
        raise DataError("no generator config (not a synthetic world?)", file=str(world),
                        column="config")
    cfg = WorldConfig.from_dict(meta["config"], file=str(Path(world) / "world.json"))
    cats = read_table(world, "categories", ["category_id", "parent_id", "look_driven"],
                      validate=False)
    leaf = pc.is_valid(cats.column("parent_id")).to_numpy(zero_copy_only=False)
    cat_ids = cats.column("category_id").to_numpy()
    look_of = dict(zip(cat_ids.tolist(),
                       cats.column("look_driven").to_numpy(zero_copy_only=False).tolist(),
                       strict=True))
    leaf_ids = np.sort(cat_ids[leaf])  # users' category_pref is per leaf, in id order
    item_cols = ["item_id", "category_id", "brand_id", "spu_id", "launch_ts", "oracle_color",
                 "oracle_price_tier", "oracle_quality", "oracle_style", "oracle_brand_vec"]
    items = _read(world, "items", item_cols).sort_by("item_id")
    item_cat = items.column("category_id").to_numpy()
    user_cols = ["user_id", "oracle_bias", "oracle_taste", "oracle_taste_drift",
                 "oracle_category_pref", "oracle_brand_pref", "oracle_price_pref"]
    users = _read(world, "users", user_cols).sort_by("user_id")

    def col(t: pa.Table, name: str) -> np.ndarray:
        return t.column(name).to_numpy()

    item_oracle = ItemOracle(
        item_id=col(items, "item_id"),
        category_index=_rows_of(leaf_ids, item_cat, "categories (leaves)", "category_id"),
        look=np.array([look_of[c] for c in item_cat.tolist()], bool),
        brand_id=col(items, "brand_id"),
        spu_id=col(items, "spu_id"),
        color=col(items, "oracle_color").astype(np.int64),
        price_tier=col(items, "oracle_price_tier").astype(np.int64),
        quality=col(items, "oracle_quality").astype(np.float64),
        style=_vectors(items, "oracle_style"),
        brand_vec=_vectors(items, "oracle_brand_vec"),
        launch_us=pc.cast(items.column("launch_ts"), pa.int64()).to_numpy(),
    )
    user_oracle = UserOracle(
        user_id=col(users, "user_id"),
        bias=col(users, "oracle_bias").astype(np.float64),
        taste=_vectors(users, "oracle_taste"),
        taste_drift=_vectors(users, "oracle_taste_drift"),
        category_pref=_vectors(users, "oracle_category_pref"),
        brand_pref=_vectors(users, "oracle_brand_pref"),
        price_pref=col(users, "oracle_price_pref").astype(np.float64),
    )
    if user_oracle.category_pref.shape[1] != len(leaf_ids):
        raise DataError(f"oracle_category_pref has {user_oracle.category_pref.shape[1]} "
                        f"entries, the categories table {len(leaf_ids)} leaves",
                        file="users", column="oracle_category_pref")
    return WorldOracle(cfg=cfg, items=item_oracle, users=user_oracle)


def _read(world: str | Path, name: str, columns: list[str]) -> pa.Table:
    files = table_files(world, name)
    names = pq.read_schema(files[0]).names if files else columns
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"missing (a world generated before these columns existed: "
                        f"regenerate it): {missing}", file=name, column=missing[0])
    return read_table(world, name, columns, validate=False)
