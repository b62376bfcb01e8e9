"""The synthetic e-commerce world of DESIGN section 4: a seeded catalog, users and search
sessions whose ground truth is known, so that every metric has a ceiling.

How clicks happen is :mod:`moon_rec.data.click_model` (the oracle logit: style, brand,
price, category, quality, query match and position terms). Its style weight is large in
look-driven ("fashion") categories and small elsewhere, where brand and price dominate.
Tastes drift slowly over time. Text titles omit colour and pattern at configured rates, so
neither the image nor the text alone tells everything. The knobs and presets are
:mod:`moon_rec.data.world_config` (``configs/world/<preset>.yaml``).

Generation is chunked and every chunk draws from its own seeded generator, so the output
depends on the seed and config only (not on chunk boundaries or process count), memory
stays bounded for the ``large`` preset, and a killed run resumes from its finished parts.
The hidden truth is written as ``oracle_`` columns (items' look and brand vector, users'
tastes and biases, each impression's query intent and click probability), enough to
recompute every click probability from the tables.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from moon_rec.data.click_model import NONE, ImpressionInputs, click_terms, p_click, unit
from moon_rec.data.errors import DataError
from moon_rec.data.images import encode_png
from moon_rec.data.io import write_table, write_world_meta
from moon_rec.data.render import (
    COLORS,
    MARK_SHAPES,
    MATERIALS,
    PATTERNS,
    ProductLook,
    catalog_photo,
    user_photo,
)
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.data.world_config import EPOCH, WorldConfig
from moon_rec.data.world_config import make_config as make_config  # re-exported

# The category tree: (top group, look-driven, leaves with their title synonyms).
CATEGORY_TREE: tuple[tuple[str, bool, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("apparel", True, (
        ("tshirt", ("t-shirt", "tee", "tshirt")),
        ("dress", ("dress", "frock", "gown")),
        ("skirt", ("skirt", "midi skirt")),
        ("pants", ("pants", "trousers", "jeans")),
        ("hoodie", ("hoodie", "sweatshirt", "pullover")),
    )),
    ("shoes", True, (
        ("sneaker", ("sneakers", "trainers", "running shoes")),
        ("boot", ("boots", "ankle boots")),
        ("heel", ("heels", "pumps", "high heels")),
    )),
    ("bags", True, (
        ("handbag", ("handbag", "tote", "purse")),
        ("backpack", ("backpack", "rucksack", "school bag")),
    )),
    ("accessories", True, (
        ("hat", ("hat", "cap", "bucket hat")),
        ("scarf", ("scarf", "shawl", "muffler")),
    )),
    ("electronics", False, (
        ("phone", ("phone", "smartphone", "mobile")),
        ("laptop", ("laptop", "notebook computer")),
        ("headphones", ("headphones", "headset", "earphones")),
        ("speaker", ("speaker", "bluetooth speaker")),
    )),
    ("home", False, (
        ("mug", ("mug", "cup", "coffee mug")),
        ("lamp", ("lamp", "desk lamp", "light")),
        ("chair", ("chair", "stool", "seat")),
        ("vase", ("vase", "flower vase")),
    )),
    ("beauty", False, (
        ("lipstick", ("lipstick", "lip color")),
        ("perfume", ("perfume", "fragrance", "eau de parfum")),
    )),
    ("food", False, (
        ("snackbox", ("snack box", "gift box", "snacks")),
        ("bottle", ("bottle", "drink", "juice")),
    )),
)
COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"), "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "lemon", "mustard"), "green": ("green", "olive", "emerald"),
    "teal": ("teal", "turquoise"), "blue": ("blue", "azure", "cobalt"),
    "navy": ("navy", "dark blue"), "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "rose", "blush"), "brown": ("brown", "chocolate", "tan"),
    "black": ("black", "jet black"), "white": ("white", "ivory", "snow"),
    "grey": ("grey", "gray", "charcoal"), "beige": ("beige", "cream", "khaki"),
}
PATTERN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "plain"), "stripes": ("striped", "stripes"),
    "checks": ("checked", "plaid", "checkered"), "dots": ("polka dot", "dotted"),
    "zigzag": ("zigzag", "chevron"), "gradient": ("gradient", "ombre"),
    "diagonal": ("diagonal stripe", "bias stripe"), "grid": ("grid", "windowpane"),
}
# plausible materials per top group (a glass t-shirt would teach the encoder nonsense)
TOP_MATERIALS: dict[str, tuple[str, ...]] = {
    "apparel": ("cotton", "wool", "silk", "leather"),
    "shoes": ("leather", "cotton", "plastic"),
    "bags": ("leather", "cotton", "plastic"),
    "accessories": ("wool", "cotton", "silk", "metal", "leather"),
    "electronics": ("metal", "plastic", "glass"),
    "home": ("wood", "glass", "metal", "plastic"),
    "beauty": ("glass", "plastic", "metal"),
    "food": ("plastic", "glass"),
}
SHAPE_WORDS: tuple[str, ...] = ("classic", "slim", "loose", "mini")
PRICE_TIERS: tuple[str, ...] = ("budget", "value", "mid-range", "premium", "luxury")
NOISE_WORDS: tuple[str, ...] = (
    "new", "2026", "hot sale", "free shipping", "best seller", "gift", "official", "original",
    "limited", "trendy",
)
SYLLABLES: tuple[str, ...] = (
    "lu", "mo", "ka", "ri", "ven", "sa", "to", "zen", "mi", "ra", "no", "vi", "el", "qu", "ta",
    "bo", "di", "fa", "go", "he", "ju", "ko", "li", "ne", "pa", "sol", "tri", "xa", "yo", "zu",
)

US_PER_DAY = 86_400 * 1_000_000


def _rng(cfg: WorldConfig, *key: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, chunk...) so chunks are reproducible."""
    return np.random.default_rng([cfg.seed, *key])


def _ts_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


@dataclass
class Catalog:
    """Item attributes held in memory (no images): what requests and clicks need."""

    item_id: np.ndarray
    category: np.ndarray  # leaf index 0..n_leaves-1
    brand: np.ndarray
    spu: np.ndarray
    color: np.ndarray
    pattern: np.ndarray
    shape: np.ndarray
    material: np.ndarray
    price_tier: np.ndarray
    price: np.ndarray
    quality: np.ndarray
    launch_us: np.ndarray
    style: np.ndarray  # (n, style_dim), unit norm
    rgb_jitter: np.ndarray  # (n, 3)
    pattern_scale: np.ndarray
    pattern_phase: np.ndarray
    width: np.ndarray
    height: np.ndarray


@dataclass
class Universe:
    """The fixed parts of a world: taxonomy, brands, style space, users' tastes."""

    cfg: WorldConfig
    leaves: list[tuple[int, str, tuple[str, ...], bool, int]]  # (cat_id, name, synonyms, look, top)
    look: np.ndarray  # (n_leaves,) bool
    brand_names: list[str]
    brand_top: np.ndarray
    brand_vec: np.ndarray
    brand_mark: list[tuple[int, tuple[int, int, int], int]]
    brand_premium: np.ndarray
    color_vec: np.ndarray
    pattern_vec: np.ndarray
    shape_vec: np.ndarray  # (n_leaves, 4, d)
    cat_popularity: np.ndarray
    base_price: np.ndarray


def build_universe(cfg: WorldConfig) -> Universe:
    rng = _rng(cfg, 1)
    leaves: list[tuple[int, str, tuple[str, ...], bool, int]] = []
    for top_idx, (_top, is_look, children) in enumerate(CATEGORY_TREE):
        for leaf_name, syns in children:
            leaves.append((101 + len(leaves), leaf_name, syns, is_look, top_idx))
    n_leaves = len(leaves)
    look = np.array([lf[3] for lf in leaves])
    names: set[str] = set()
    brand_names: list[str] = []
    while len(brand_names) < cfg.n_brands:
        n_syl = int(rng.integers(2, 4))
        name = "".join(rng.choice(SYLLABLES, n_syl)).capitalize()
        if name not in names:
            names.add(name)
            brand_names.append(name)
    n_top = len(CATEGORY_TREE)
    brand_top = rng.integers(0, n_top, cfg.n_brands)
    brand_vec = rng.normal(0, 1, (cfg.n_brands, 4)) / 2.0
    brand_mark: list[tuple[int, tuple[int, int, int], int]] = []
    for _ in range(cfg.n_brands):
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        brand_mark.append((int(rng.integers(len(MARK_SHAPES))), (r, g, b), int(rng.integers(4))))
    d = cfg.style_dim
    color_vec = rng.normal(0, 1, (len(COLORS), d))
    pattern_vec = rng.normal(0, 1, (len(PATTERNS), d)) * 0.8
    shape_vec = rng.normal(0, 1, (n_leaves, 4, d)) * 0.6
    cat_popularity = 1.0 / np.arange(1, n_leaves + 1) ** 0.6
    rng.shuffle(cat_popularity)
    cat_popularity /= cat_popularity.sum()
    base_price = np.exp(rng.uniform(np.log(8), np.log(300), n_leaves))
    return Universe(
        cfg=cfg, leaves=leaves, look=look, brand_names=brand_names, brand_top=brand_top,
        brand_vec=brand_vec, brand_mark=brand_mark,
        brand_premium=np.exp(rng.normal(0, 0.3, cfg.n_brands)), color_vec=color_vec,
        pattern_vec=pattern_vec, shape_vec=shape_vec, cat_popularity=cat_popularity,
        base_price=base_price,
    )


def build_catalog(u: Universe) -> Catalog:
    """Sample every item's attributes. Items are grouped into SPUs: variants of one product
    share category, brand, shape, pattern and material and differ in colour."""
    cfg = u.cfg
    rng = _rng(cfg, 2)
    n = cfg.n_items
    n_leaves = len(u.leaves)
    # SPUs of 1-3 colour variants
    sizes = rng.choice([1, 2, 3], size=n, p=[0.6, 0.25, 0.15])
    spu_of = np.repeat(np.arange(n), sizes)[:n]
    n_spu = int(spu_of.max()) + 1
    spu_cat = rng.choice(n_leaves, n_spu, p=u.cat_popularity)
    spu_top = np.array([u.leaves[c][4] for c in spu_cat])
    # brand: mostly from the SPU's top group, zipf-popular within it
    brand_rank = 1.0 / np.arange(1, cfg.n_brands + 1) ** 0.8
    spu_brand = np.empty(n_spu, np.int64)
    for top in range(len(CATEGORY_TREE)):
        idx = np.flatnonzero(spu_top == top)
        pool = np.flatnonzero(u.brand_top == top)
        if pool.size == 0:
            pool = np.arange(cfg.n_brands)
        w = brand_rank[: pool.size] / brand_rank[: pool.size].sum()
        spu_brand[idx] = pool[rng.choice(pool.size, idx.size, p=w)]
    spu_shape = rng.integers(0, 4, n_spu)
    spu_pattern = rng.choice(len(PATTERNS), n_spu, p=_pattern_probs())
    spu_material = np.empty(n_spu, np.int64)
    for top, (top_name, _look, _leaves) in enumerate(CATEGORY_TREE):
        idx = np.flatnonzero(spu_top == top)
        allowed = [MATERIALS.index(m) for m in TOP_MATERIALS[top_name]]
        spu_material[idx] = rng.choice(allowed, idx.size)
    spu_tier = rng.choice(5, n_spu, p=[0.2, 0.3, 0.3, 0.15, 0.05])
    spu_quality = rng.normal(0, 1, n_spu)
    spu_launch_day = np.where(
        rng.random(n_spu) < cfg.initial_item_frac,
        -rng.uniform(0, 365, n_spu),
        rng.uniform(0, cfg.days, n_spu),
    )
    color = rng.integers(0, len(COLORS), n)
    cat = spu_cat[spu_of]
    shape = spu_shape[spu_of]
    pattern = spu_pattern[spu_of]
    style = unit(
        u.color_vec[color] + u.pattern_vec[pattern] + u.shape_vec[cat, shape]
        + rng.normal(0, 0.3, (n, cfg.style_dim))
    )
    tier = spu_tier[spu_of]
    brand = spu_brand[spu_of]
    price = u.base_price[cat] * (1.6 ** (tier - 2)) * u.brand_premium[brand] * np.exp(
        rng.normal(0, 0.1, n)
    )
    launch_day = spu_launch_day[spu_of] + rng.uniform(0, 2, n) * (spu_launch_day[spu_of] >= 0)
    launch_us = _ts_us(EPOCH) + (launch_day * US_PER_DAY).astype(np.int64)
    return Catalog(
        item_id=np.arange(1, n + 1, dtype=np.int64),
        category=cat, brand=brand, spu=spu_of.astype(np.int64) + 1, color=color,
        pattern=pattern, shape=shape, material=spu_material[spu_of], price_tier=tier,
        price=np.round(price, 2), quality=spu_quality[spu_of] + rng.normal(0, 0.2, n),
        launch_us=launch_us, style=style,
        rgb_jitter=rng.integers(-14, 15, (n, 3)), pattern_scale=rng.uniform(0.1, 0.22, n),
        pattern_phase=rng.uniform(0, 1, n), width=rng.uniform(0.9, 1.06, n),
        height=rng.uniform(0.9, 1.06, n),
    )


def _pattern_probs() -> np.ndarray:
    p = np.ones(len(PATTERNS))
    p[0] = 3.0  # solid is the commonest
    return p / p.sum()


def item_look(u: Universe, cat: Catalog, i: int) -> ProductLook:
    """The ProductLook of catalog row ``i``."""
    return ProductLook(
        category=u.leaves[int(cat.category[i])][1],
        variant=int(cat.shape[i]),
        color=int(cat.color[i]),
        rgb_jitter=tuple(int(v) for v in cat.rgb_jitter[i]),  # type: ignore[arg-type]
        pattern=int(cat.pattern[i]),
        pattern_scale=float(cat.pattern_scale[i]),
        pattern_phase=float(cat.pattern_phase[i]),
        material=int(cat.material[i]),
        mark=u.brand_mark[int(cat.brand[i])],
        width=float(cat.width[i]),
        height=float(cat.height[i]),
    )


def item_texts(u: Universe, cat: Catalog, i: int) -> tuple[str, str]:
    """(title, attributes) of catalog row ``i``: noisy, with colour/pattern often omitted."""
    cfg = u.cfg
    rng = _rng(cfg, 3, int(cat.item_id[i]))
    _cid, _name, syns, _look, _top = u.leaves[int(cat.category[i])]
    color = COLORS[int(cat.color[i])][0]
    pattern = PATTERNS[int(cat.pattern[i])]
    words = [u.brand_names[int(cat.brand[i])]]
    if rng.random() < 0.5:
        words.append(MATERIALS[int(cat.material[i])])
    if rng.random() >= cfg.title_omit_color:
        words.append(str(rng.choice(COLOR_SYNONYMS[color])))
    if rng.random() >= cfg.title_omit_pattern:
        words.append(str(rng.choice(PATTERN_SYNONYMS[pattern])))
    if rng.random() < 0.4:
        words.append(SHAPE_WORDS[int(cat.shape[i])])
    words.append(str(rng.choice(syns)))
    if rng.random() < cfg.title_noise_words:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(NOISE_WORDS)))
    title = " ".join(words)
    attrs = []
    for key, value in (
        ("color", color),
        ("pattern", pattern),
        ("material", MATERIALS[int(cat.material[i])]),
        ("fit", SHAPE_WORDS[int(cat.shape[i])]),
        ("price", PRICE_TIERS[int(cat.price_tier[i])]),
    ):
        if rng.random() >= cfg.attr_omit:
            attrs.append(f"{key}: {value}")
    return title, "; ".join(attrs)


@dataclass
class Population:
    """Users: signup, activity, category preference, taste (with drift), brand and price."""

    user_id: np.ndarray
    signup_us: np.ndarray
    activity: np.ndarray
    bias: np.ndarray
    cat_pref: np.ndarray  # (n, n_leaves), rows sum to 1
    taste0: np.ndarray  # (n, d) unit
    drift: np.ndarray  # (n, d)
    brand_pref: np.ndarray  # (n, 4)
    price_pref: np.ndarray
    color_pref: np.ndarray  # favourite colour index (for text queries)


def build_population(u: Universe, cat: Catalog) -> Population:
    cfg = u.cfg
    rng = _rng(cfg, 4)
    n = cfg.n_users
    n_leaves = len(u.leaves)
    cat_pref = rng.dirichlet(np.full(n_leaves, 0.3), n) * 0.8 + 0.2 * u.cat_popularity
    taste0 = unit(rng.normal(0, 1, (n, cfg.style_dim)))
    drift = rng.normal(0, 1, (n, cfg.style_dim)) * cfg.taste_drift
    color_score = taste0 @ u.color_vec.T
    return Population(
        user_id=np.arange(1, n + 1, dtype=np.int64),
        signup_us=_ts_us(EPOCH) - (rng.uniform(1, 700, n) * US_PER_DAY).astype(np.int64),
        activity=rng.lognormal(0, 0.8, n),
        bias=rng.normal(0, 0.3, n),
        cat_pref=cat_pref,
        taste0=taste0,
        drift=drift,
        brand_pref=rng.normal(0, 1, (n, 4)),
        price_pref=rng.uniform(0, 4, n),
        color_pref=color_score.argmax(1),
    )


# --------------------------------------------------------------------------------------
# requests, impressions, clicks


def simulate_requests(
    u: Universe, cat: Catalog, pop: Population, chunk: int, n_req: int, iq: _ImageQueryIndex
) -> tuple[pa.Table, pa.Table]:
    """One chunk of search requests -> (impressions, behaviors) tables."""
    cfg = u.cfg
    rng = _rng(cfg, 10, chunk)
    start_us, end_us = _ts_us(EPOCH), _ts_us(cfg.end)
    span = end_us - start_us
    # Requests of this chunk cover its own slice of time, sorted.
    first = chunk * cfg.chunk_requests  # request density is uniform over time
    lo = start_us + span * first // cfg.n_requests
    hi = start_us + span * (first + n_req) // cfg.n_requests
    ts = np.sort(rng.integers(lo, hi, n_req))
    p_user = pop.activity / pop.activity.sum()
    users = rng.choice(cfg.n_users, n_req, p=p_user)
    # category of the request from the user's preference (inverse-CDF per row)
    cdf = np.cumsum(pop.cat_pref[users], axis=1)
    req_cat = (cdf < rng.random(n_req)[:, None] * cdf[:, -1:]).sum(1)
    req_cat = np.minimum(req_cat, len(u.leaves) - 1)
    # the text query: a category word, sometimes a colour or a brand
    q_color = np.where(rng.random(n_req) < 0.25, pop.color_pref[users], -1)
    q_brand = np.full(n_req, -1)
    # candidates: items of the category already launched
    L = cfg.list_len
    cand = np.full((n_req, L), -1, np.int64)
    by_cat = [np.flatnonzero(cat.category == c) for c in range(len(u.leaves))]
    by_cat = [idx[np.argsort(cat.launch_us[idx], kind="stable")] for idx in by_cat]
    for c in range(len(u.leaves)):
        rows = np.flatnonzero(req_cat == c)
        if rows.size == 0:
            continue
        pool = by_cat[c]
        n_live = np.searchsorted(cat.launch_us[pool], ts[rows], side="right")
        ok = n_live > 0
        rows, n_live = rows[ok], n_live[ok]
        # 70% uniform over live items, 30% among the newest fifth (fresh items get shown)
        r = rng.random((rows.size, L))
        fresh = rng.random((rows.size, L)) < 0.3
        lo_idx = np.where(fresh, (n_live[:, None] * 0.8).astype(np.int64), 0)
        pick = lo_idx + (r * (n_live[:, None] - lo_idx)).astype(np.int64)
        cand[rows] = pool[np.minimum(pick, n_live[:, None] - 1)]
    # some requests brand-filtered in the text ("<brand> <category>")
    with_brand = (rng.random(n_req) < 0.1) & (cand[:, 0] >= 0)
    q_brand[with_brand] = cat.brand[cand[with_brand, 0]]
    # image-query requests: a photo of one live item of the category
    img_req = (rng.random(n_req) < cfg.image_query_request_frac) & (cand[:, 0] >= 0)
    q_image = np.full(n_req, -1, np.int64)
    target_item = np.full(n_req, -1, np.int64)
    for r_ in np.flatnonzero(img_req):
        qid, item_row = iq.sample(rng, cand[r_], ts[r_])
        if qid >= 0:
            q_image[r_] = qid
            target_item[r_] = item_row
            cand[r_, int(rng.integers(0, L))] = item_row
    # drop duplicate candidates within a request
    srt = np.sort(cand, axis=1)
    dup_sorted = np.zeros_like(cand, bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    order = np.argsort(cand, axis=1, kind="stable")
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    cand[dup] = -1
    # the production ranker's order: quality plus noise -> positions
    valid = cand >= 0
    score = np.where(valid, cat.quality[np.maximum(cand, 0)] + rng.normal(0, 1.0, cand.shape), -1e9)
    rank = np.argsort(-score, axis=1, kind="stable")
    cand = np.take_along_axis(cand, rank, 1)
    valid = cand >= 0
    rr, pos = np.nonzero(valid)
    items = cand[rr, pos]
    uu = users[rr]
    qc, qb, qi = q_color[rr], q_brand[rr], target_item[rr]
    terms = click_terms(cfg, ImpressionInputs(
        position=pos,
        t_frac=(ts[rr] - start_us) / span,
        look=u.look[cat.category[items]],
        user_bias=pop.bias[uu],
        taste=pop.taste0[uu],
        taste_drift=pop.drift[uu],
        category_pref=pop.cat_pref[uu, cat.category[items]],
        n_categories=len(u.leaves),
        brand_pref=pop.brand_pref[uu],
        price_pref=pop.price_pref[uu],
        item=items,
        spu=cat.spu[items],
        style=cat.style[items],
        brand=cat.brand[items],
        brand_vec=u.brand_vec[cat.brand[items]],
        color=cat.color[items],
        price_tier=cat.price_tier[items],
        quality=cat.quality[items],
        query_color=qc,
        query_brand=qb,
        query_item=qi,
        query_spu=cat.spu[np.maximum(qi, 0)],
    ))
    p = p_click(cfg, terms)
    clicked = (rng.random(p.size) < p).astype(np.int8)
    request_id = (chunk * cfg.chunk_requests + rr + 1).astype(np.int64)
    qtext = _query_texts(u, rng, req_cat, q_color, q_brand, q_image)
    imp_ts = ts[rr] + pos.astype(np.int64)  # shown at the request time (+ pos us: stable order)
    impressions = pa.table({
        "request_id": request_id,
        "user_id": pop.user_id[uu],
        "ts": pa.array(imp_ts, TIMESTAMP),
        "query_text": pa.array([qtext[r_] for r_ in rr], pa.string()),
        "item_id": cat.item_id[items],
        "position": pos.astype(np.int32),
        "clicked": clicked,
        "oracle_p_click": p.astype(np.float32),
        "oracle_logit_style": terms.style.astype(np.float32),
        # the query's intent as the click model used it (null: none); rows (brand index,
        # catalog row) become ids
        "oracle_query_color": pa.array(qc, pa.int32(), mask=qc == NONE),
        "oracle_query_brand_id": pa.array(qb + 1, pa.int64(), mask=qb == NONE),
        "oracle_query_item_id": pa.array(
            cat.item_id[np.maximum(qi, 0)], pa.int64(), mask=qi == NONE
        ),
    })
    # behaviours: every click, deepened to cart / buy; they happen seconds after the request
    ci = np.flatnonzero(clicked == 1)
    depth = np.zeros(ci.size, np.int8)
    cart = rng.random(ci.size) < cfg.cart_rate
    depth[cart] = 1
    depth[cart & (rng.random(ci.size) < cfg.buy_rate)] = 2
    actions = np.array(["click", "cart", "buy"])[depth]
    b_ts = imp_ts[ci] + rng.integers(1, 120, ci.size) * 1_000_000
    q_img = q_image[rr[ci]]
    behaviors = pa.table({
        "user_id": pop.user_id[uu[ci]],
        "item_id": cat.item_id[items[ci]],
        "ts": pa.array(b_ts, TIMESTAMP),
        "action": pa.array(actions, pa.string()),
        "query_text": pa.array([qtext[r_] for r_ in rr[ci]], pa.string()),
        "query_image_id": pa.array(np.where(q_img >= 0, q_img, 0), pa.int64(), mask=q_img < 0),
    })
    return impressions, behaviors


def _query_texts(
    u: Universe, rng: np.random.Generator, req_cat: np.ndarray, q_color: np.ndarray,
    q_brand: np.ndarray, q_image: np.ndarray,
) -> list[str]:
    out = []
    for r in range(req_cat.size):
        if q_image[r] >= 0:
            out.append("")  # an image query: no text
            continue
        syns = u.leaves[int(req_cat[r])][2]
        words = [str(syns[int(rng.integers(len(syns)))])]
        if q_color[r] >= 0:
            words.insert(0, COLOR_SYNONYMS[COLORS[int(q_color[r])][0]][0])
        if q_brand[r] >= 0:
            words.insert(0, u.brand_names[int(q_brand[r])].lower())
        out.append(" ".join(words))
    return out


@dataclass
class _ImageQueryIndex:
    """Which user photos exist (query_id, item row, ts), to attach to image-query requests."""

    query_id: np.ndarray
    item_row: np.ndarray
    ts_us: np.ndarray

    def sample(
        self, rng: np.random.Generator, cand_rows: np.ndarray, ts: int
    ) -> tuple[int, int]:
        live = cand_rows[cand_rows >= 0]
        if live.size == 0:
            return -1, -1
        row = int(live[int(rng.integers(live.size))])
        # item_row is sorted (queries are planned item by item): the item's photos are a slice
        lo, hi = np.searchsorted(self.item_row, [row, row + 1])
        qs = lo + np.flatnonzero(self.ts_us[lo:hi] <= ts)
        if qs.size == 0:
            return -1, -1
        q = int(qs[int(rng.integers(qs.size))])
        return int(self.query_id[q]), row


def plan_image_queries(u: Universe, cat: Catalog) -> _ImageQueryIndex:
    """Each item gets ``queries_per_item`` user photos taken after it launched."""
    cfg = u.cfg
    rng = _rng(cfg, 5)
    k = cfg.queries_per_item
    rows = np.repeat(np.arange(cfg.n_items), k)
    start = np.maximum(cat.launch_us[rows], _ts_us(EPOCH))
    end = _ts_us(cfg.end)
    ts = start + (rng.random(rows.size) * np.maximum(end - start, 1)).astype(np.int64)
    return _ImageQueryIndex(
        query_id=np.arange(1, rows.size + 1, dtype=np.int64), item_row=rows, ts_us=ts
    )


# --------------------------------------------------------------------------------------
# images, in worker processes


_WORKER: dict[str, Any] = {}


def _init_worker(cfg_dict: dict[str, Any]) -> None:
    cfg = WorldConfig.model_validate(cfg_dict)
    u = build_universe(cfg)
    _WORKER["u"] = u
    _WORKER["cat"] = build_catalog(u)


def _render_rows(job: tuple[str, list[int], list[int]]) -> list[bytes]:
    kind, rows, keys = job
    u: Universe = _WORKER["u"]
    cat: Catalog = _WORKER["cat"]
    out = []
    for row, key in zip(rows, keys, strict=True):
        look = item_look(u, cat, row)
        rng = _rng(u.cfg, 6 if kind == "catalog" else 7, key)
        img = catalog_photo(look, u.cfg.image_size, rng) if kind == "catalog" else user_photo(
            look, u.cfg.image_size, rng
        )
        out.append(encode_png(img))
    return out


class _Renderer:
    """Renders images in a process pool (or in process for ``workers=1``)."""

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        self.pool = None
        if cfg.workers > 1:
            ctx = mp.get_context("fork")
            self.pool = ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg.to_dict(),))
        else:
            _init_worker(cfg.to_dict())

    def render(
        self, kind: str, rows: np.ndarray, keys: np.ndarray, bar: tqdm | None = None
    ) -> list[bytes]:
        """PNG bytes of ``rows`` (in order); ``keys`` seed each image's randomness."""
        step = 256
        jobs = [
            (kind, rows[i : i + step].tolist(), keys[i : i + step].tolist())
            for i in range(0, rows.size, step)
        ]
        parts = map(_render_rows, jobs) if self.pool is None else self.pool.imap(_render_rows, jobs)
        out: list[bytes] = []
        for part in parts:
            out.extend(part)
            if bar is not None:
                bar.update(len(part))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# --------------------------------------------------------------------------------------
# tables


def items_chunk(u: Universe, cat: Catalog, rows: np.ndarray, images: list[bytes]) -> pa.Table:
    texts = [item_texts(u, cat, int(i)) for i in rows]
    return pa.table({
        "item_id": cat.item_id[rows],
        "category_id": np.array([u.leaves[int(c)][0] for c in cat.category[rows]], np.int64),
        "brand_id": cat.brand[rows].astype(np.int64) + 1,
        "title": pa.array([t for t, _ in texts], pa.string()),
        "attributes": pa.array([a for _, a in texts], pa.string()),
        "price": cat.price[rows].astype(np.float64),
        "launch_ts": pa.array(cat.launch_us[rows], TIMESTAMP),
        "image": pa.array(images, pa.binary()),
        "spu_id": cat.spu[rows],
        "oracle_color": cat.color[rows].astype(np.int32),
        "oracle_pattern": cat.pattern[rows].astype(np.int32),
        "oracle_shape": cat.shape[rows].astype(np.int32),
        "oracle_material": cat.material[rows].astype(np.int32),
        "oracle_price_tier": cat.price_tier[rows].astype(np.int32),
        "oracle_quality": cat.quality[rows].astype(np.float32),
        "oracle_style": pa.array(list(cat.style[rows].astype(np.float32)), pa.list_(pa.float32())),
        "oracle_brand_vec": pa.array(
            list(u.brand_vec[cat.brand[rows]].astype(np.float32)), pa.list_(pa.float32())
        ),
    })


def users_table(u: Universe, pop: Population) -> pa.Table:
    f32 = pa.list_(pa.float32())
    return pa.table({
        "user_id": pop.user_id,
        "signup_ts": pa.array(pop.signup_us, TIMESTAMP),
        "oracle_taste": pa.array(list(pop.taste0.astype(np.float32)), f32),
        "oracle_category_pref": pa.array(list(pop.cat_pref.astype(np.float32)), f32),
        "oracle_brand_pref": pa.array(list(pop.brand_pref.astype(np.float32)), f32),
        "oracle_price_pref": pop.price_pref.astype(np.float32),
        "oracle_bias": pop.bias.astype(np.float32),
        "oracle_taste_drift": pa.array(list(pop.drift.astype(np.float32)), f32),
    })


def categories_table(u: Universe) -> pa.Table:
    ids: list[int] = []
    parents: list[int | None] = []
    names: list[str] = []
    looks: list[bool] = []
    for top_idx, (top_name, top_look, _children) in enumerate(CATEGORY_TREE):
        ids.append(top_idx + 1)
        parents.append(None)
        names.append(top_name)
        looks.append(top_look)
    for cid, leaf_name, _syns, leaf_look, top in u.leaves:
        ids.append(cid)
        parents.append(top + 1)
        names.append(leaf_name)
        looks.append(leaf_look)
    return pa.table({
        "category_id": pa.array(ids, pa.int64()),
        "parent_id": pa.array(parents, pa.int64()),
        "name": pa.array(names, pa.string()),
        "look_driven": pa.array(looks, pa.bool_()),
    })


# --------------------------------------------------------------------------------------
# the job


class _Parts:
    """Chunked, resumable table output: ``OUT/.parts/<table>/part-NNNNN.parquet`` written
    atomically, finalised to ``OUT/<table>.parquet`` (one part) or ``OUT/<table>/``."""

    def __init__(self, out: Path, table: str, n_parts: int) -> None:
        self.out = out
        self.table = table
        self.dir = out / ".parts" / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n_parts = n_parts

    def path(self, k: int) -> Path:
        return self.dir / f"part-{k:05d}.parquet"

    def done(self, k: int) -> bool:
        return self.path(k).is_file()

    def write(self, k: int, table: pa.Table) -> None:
        write_table(table, self.path(k), name=self.table)

    def finalize(self) -> None:
        single = self.out / f"{self.table}.parquet"
        folder = self.out / self.table
        for old in (single, folder):
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        if self.n_parts == 1:
            os.replace(self.path(0), single)
            shutil.rmtree(self.dir)
        else:
            os.replace(self.dir, folder)


def generate_world(
    cfg: WorldConfig, out: str | Path, *, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate a world into ``out`` and return its ``world.json`` content.

    Resumable: parts already written by an earlier run with the same config are kept.
    """
    out = Path(out)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    state = out / ".parts" / "config.json"
    if state.is_file():
        previous = json.loads(state.read_text())
        if previous != cfg.to_dict():
            raise DataError(
                "an unfinished world with another config is here; remove it or use --overwrite",
                file=str(out),
            )
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(cfg.to_dict(), sort_keys=True))

    u = build_universe(cfg)
    cat = build_catalog(u)
    pop = build_population(u, cat)
    iq = plan_image_queries(u, cat)
    renderer = _Renderer(cfg)
    try:
        _write_items(u, cat, iq, renderer, out, progress)
    finally:
        renderer.close()
    write_table(users_table(u, pop), out / "users.parquet", name="users")
    write_table(categories_table(u), out / "categories.parquet", name="categories")
    n_chunks = math.ceil(cfg.n_requests / cfg.chunk_requests)
    imp_parts = _Parts(out, "impressions", n_chunks)
    beh_parts = _Parts(out, "behaviors", n_chunks)
    for k in tqdm(range(n_chunks), desc="requests", unit="chunk", disable=not progress):
        if imp_parts.done(k) and beh_parts.done(k):
            continue
        n_req = min(cfg.chunk_requests, cfg.n_requests - k * cfg.chunk_requests)
        imps, behs = simulate_requests(u, cat, pop, k, n_req, iq)
        beh_parts.write(k, behs)
        imp_parts.write(k, imps)  # written last: its presence marks the chunk done
    imp_parts.finalize()
    beh_parts.finalize()
    meta = summarize(cfg, out, u, cat, time.time() - t0)
    write_world_meta(out, meta)
    shutil.rmtree(out / ".parts", ignore_errors=True)
    return meta


def _write_items(
    u: Universe, cat: Catalog, iq: _ImageQueryIndex, renderer: _Renderer, out: Path,
    progress: bool,
) -> None:
    cfg = u.cfg
    n_item_parts = math.ceil(cfg.n_items / cfg.chunk_items)
    items = _Parts(out, "items", n_item_parts)
    queries = _Parts(out, "image_queries", n_item_parts)
    n_images = cfg.n_items + iq.query_id.size
    bar = tqdm(total=n_images, desc="catalog + user photos", unit="img", disable=not progress)
    for k in range(n_item_parts):
        rows = np.arange(k * cfg.chunk_items, min((k + 1) * cfg.chunk_items, cfg.n_items))
        q = np.flatnonzero((iq.item_row >= rows[0]) & (iq.item_row <= rows[-1]))
        if items.done(k) and queries.done(k):
            bar.update(rows.size + q.size)
        else:
            images = renderer.render("catalog", rows, cat.item_id[rows], bar)
            items.write(k, items_chunk(u, cat, rows, images))
            q_images = renderer.render("query", iq.item_row[q], iq.query_id[q], bar)
            queries.write(k, pa.table({
                "query_id": iq.query_id[q],
                "item_id": cat.item_id[iq.item_row[q]],
                "ts": pa.array(iq.ts_us[q], TIMESTAMP),
                "image": pa.array(q_images, pa.binary()),
            }))
    bar.close()
    items.finalize()
    queries.finalize()


def summarize(
    cfg: WorldConfig, out: Path, u: Universe, cat: Catalog, seconds: float
) -> dict[str, Any]:
    """world.json: config, seed, split timestamps and summary statistics.

    Streams the impression parts and keeps only the test rows, so memory stays bounded.
    """
    import re

    import pyarrow.compute as pc
    from sklearn.metrics import roc_auc_score

    from moon_rec.data.validation import iter_file_batches, table_files

    train_end_us = _ts_us(cfg.train_end)
    order = np.argsort(cat.item_id)
    look_item = u.look[cat.category]
    n_imp, n_click = 0, 0
    y_parts, p_parts, item_parts = [], [], []
    for path in table_files(out, "impressions"):
        for b in iter_file_batches(path, ["ts", "item_id", "clicked", "oracle_p_click"]):
            clicked = b.column("clicked").to_numpy()
            n_imp += clicked.size
            n_click += int(clicked.sum())
            test = b.column("ts").cast(pa.int64()).to_numpy() >= train_end_us
            y_parts.append(clicked[test])
            p_parts.append(b.column("oracle_p_click").to_numpy()[test])
            item_parts.append(b.column("item_id").to_numpy()[test])
    y = np.concatenate(y_parts)
    p = np.concatenate(p_parts)
    rows = order[np.searchsorted(cat.item_id, np.concatenate(item_parts), sorter=order)]
    look_mask = look_item[rows]
    cold = cat.launch_us >= train_end_us

    def auc(mask: np.ndarray) -> float | None:
        ys = y[mask]
        if ys.size == 0 or ys.min() == ys.max():
            return None
        return round(float(roc_auc_score(ys, p[mask])), 4)

    def mention_rate(synonyms: dict[str, tuple[str, ...]]) -> float:
        words = sorted({w for syns in synonyms.values() for w in syns}, key=len, reverse=True)
        pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
        hits = total = 0
        for path in table_files(out, "items"):
            for b in iter_file_batches(path, ["title"]):
                found = pc.match_substring_regex(pc.utf8_lower(b.column("title")), pattern)
                hits += int(pc.sum(found).as_py() or 0)
                total += b.num_rows
        return round(hits / max(total, 1), 3)

    return {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "start_ts": EPOCH.isoformat(),
        "train_end_ts": cfg.train_end.isoformat(),
        "end_ts": cfg.end.isoformat(),
        "n_items": cfg.n_items,
        "n_users": cfg.n_users,
        "n_requests": cfg.n_requests,
        "n_impressions": n_imp,
        "n_impressions_test": int(y.size),
        "n_behaviors": _count_rows(out, "behaviors"),
        "n_image_queries": _count_rows(out, "image_queries"),
        "n_image_queries_eval": _count_eval_queries(out, train_end_us),
        "ctr": round(n_click / max(n_imp, 1), 4),
        "n_cold_items": int(cold.sum()),
        "n_cold_items_test": int(np.unique(rows[cold[rows]]).size),
        "oracle_auc_test": auc(np.ones(y.size, bool)),
        "oracle_auc_test_look_driven": auc(look_mask),
        "oracle_auc_test_other": auc(~look_mask),
        "title_color_rate": mention_rate(COLOR_SYNONYMS),
        "title_pattern_rate": mention_rate(PATTERN_SYNONYMS),
        "eval_image_queries": "image_queries with ts >= train_end_ts (never in training behaviours)",
        "generation_seconds": round(seconds, 1),
    }


def _count_rows(out: Path, name: str) -> int:
    from moon_rec.data.validation import table_files

    return sum(pq.ParquetFile(p).metadata.num_rows for p in table_files(out, name))


def _count_eval_queries(out: Path, train_end_us: int) -> int:
    from moon_rec.data.io import read_table

    ts = read_table(out, "image_queries", ["ts"], validate=False).column("ts")
    return int((ts.cast(pa.int64()).to_numpy() >= train_end_us).sum())
