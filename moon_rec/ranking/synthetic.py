"""A small generator of ranker inputs in the cross-package formats (tests, benchmarks).

Writes, under ``out``: ``training_set.parquet`` (the issue-4 training-set format),
``embeddings/items.parquet`` and ``embeddings/queries.parquet`` (the batch-embed format)
and ``world/impressions.parquet`` (with ``oracle_p_click``). Clicks follow a planted model:
in look-driven categories the click logit has a strong user-taste x item-style term, and
an item's MOON vector carries its style, so content similarities are informative; items of
the last ``cold_fraction`` of ids launch in the test period only. The item embeddings carry
``semantic_ids`` (:data:`SYNTHETIC_SEMANTIC_IDS`: 2 levels x 16 codewords of ``emb_32``)
and the quantiser sits next to them, as the embed job writes them.

This is a stand-in for ``moon world generate`` + the training-set builder, not a world.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.embeddings import QUERY_KEY, embedding_table, prefixes_of, write_embedding_table
from moon_rec.data.training_set import TRAINING_SET_SCHEMA
from moon_rec.encoders.config import DEFAULT_DIMS
from moon_rec.retrieval.semantic_ids import SEMANTIC_IDS_FILE, SemanticIdConfig, fit_semantic_ids

DIMS: tuple[int, ...] = DEFAULT_DIMS  # the encoder config's default sizes
TS = pa.timestamp("us", tz="UTC")
SYNTHETIC_SEMANTIC_IDS = SemanticIdConfig(levels=2, codebook=16, dim=32)


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`write_synthetic_ranker_inputs` wrote its files."""

    training_set: Path
    embeddings: Path
    world: Path
    model_version: str


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def write_synthetic_ranker_inputs(
    out: str | Path,
    *,
    n_users: int = 120,
    n_items: int = 300,
    n_requests: int = 1500,
    slate: int = 8,
    n_categories: int = 8,
    n_brands: int = 20,
    max_hist: int = 30,
    cold_fraction: float = 0.2,
    seed: int = 0,
    model_version: str = "synthetic-v1",
) -> SyntheticPaths:
    """Generate and write a small ranker data set; returns the paths.

    Args:
        out: output directory (created).
        n_users, n_items, n_requests, slate: sizes (rows = n_requests * slate).
        n_categories: categories; the even ones are look-driven.
        n_brands: brands.
        max_hist: behaviours kept per row.
        cold_fraction: share of items (the highest ids) that launch in the test period.
        seed: RNG seed (same seed, same files).
        model_version: written to the embedding files.
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    (out / "world").mkdir(parents=True, exist_ok=True)
    style_dim = 8
    cat = rng.integers(0, n_categories, n_items)
    brand = rng.integers(0, n_brands, n_items)
    style = _unit(rng.normal(size=(n_items, style_dim)))
    quality = rng.normal(0, 0.5, n_items)
    look = cat % 2 == 0
    n_cold = int(n_items * cold_fraction)
    is_cold_item = np.arange(n_items) >= n_items - n_cold
    taste = _unit(rng.normal(size=(n_users, style_dim)))
    brand_aff = rng.normal(0, 0.5, (n_users, n_brands))
    full = np.concatenate(
        [style, 0.35 * rng.normal(size=(n_items, DIMS[-1] - style_dim)) / 4], axis=1
    )

    start = datetime(2026, 1, 1, tzinfo=UTC)
    n_train_req = int(n_requests * 0.7)
    history: list[list[int]] = [[] for _ in range(n_users)]
    rows: dict[str, list] = {
        k: []
        for k in (
            "request_id",
            "user_id",
            "item_id",
            "ts",
            "query_text",
            "position",
            "clicked",
            "category_id",
            "brand_id",
            "hist_item_ids",
            "hist_category_ids",
            "hist_actions",
            "hist_ts",
            "split",
            "is_cold",
            "look_driven",
            "oracle_p_click",
        )
    }
    hist_ts: list[list[datetime]] = [[] for _ in range(n_users)]
    warm_by_cat = [np.flatnonzero((cat == c) & ~is_cold_item) for c in range(n_categories)]
    all_by_cat = [np.flatnonzero(cat == c) for c in range(n_categories)]
    for r in range(n_requests):
        u = int(rng.integers(0, n_users))
        c = int(rng.integers(0, n_categories))
        test = r >= n_train_req
        pool = all_by_cat[c] if test else warm_by_cat[c]
        if len(pool) == 0:
            continue
        shown = rng.choice(pool, size=min(slate, len(pool)), replace=False)
        ts = start + timedelta(minutes=10 * r)
        h = history[u][-max_hist:][::-1]
        hts = hist_ts[u][-max_hist:][::-1]
        clicks = []
        for pos, i in enumerate(shown):
            match = float(taste[u] @ style[i])
            logit = (
                -1.2
                + (3.0 if look[i] else 0.4) * match
                + brand_aff[u, brand[i]]
                + quality[i]
                - 0.1 * pos
            )
            p = 1.0 / (1.0 + np.exp(-logit))
            y = int(rng.random() < p)
            rows["request_id"].append(r)
            rows["user_id"].append(u)
            rows["item_id"].append(int(i))
            rows["ts"].append(ts)
            rows["query_text"].append(f"category {c} item")
            rows["position"].append(pos)
            rows["clicked"].append(y)
            rows["category_id"].append(c)
            rows["brand_id"].append(int(brand[i]))
            rows["hist_item_ids"].append(list(h))
            rows["hist_category_ids"].append([int(cat[j]) for j in h])
            rows["hist_actions"].append(["click"] * len(h))
            rows["hist_ts"].append(list(hts))
            rows["split"].append("test" if test else "train")
            rows["is_cold"].append(bool(is_cold_item[i]))
            rows["look_driven"].append(bool(look[i]))
            rows["oracle_p_click"].append(float(p))
            if y:
                clicks.append(int(i))
        for i in clicks:
            history[u].append(i)
            hist_ts[u].append(ts)
    oracle = rows.pop("oracle_p_click")
    table = pa.table(rows, schema=TRAINING_SET_SCHEMA)
    training_set = out / "training_set.parquet"
    pq.write_table(table, training_set)

    impressions = pa.table(
        {
            "request_id": table.column("request_id"),
            "user_id": table.column("user_id"),
            "ts": table.column("ts"),
            "query_text": table.column("query_text"),
            "item_id": table.column("item_id"),
            "position": table.column("position"),
            "clicked": table.column("clicked"),
            "oracle_p_click": pa.array(oracle, pa.float32()),
        }
    )
    pq.write_table(impressions, out / "world" / "impressions.parquet")

    now = datetime(2026, 6, 1, tzinfo=UTC)
    quantiser = fit_semantic_ids(full, model_version, SYNTHETIC_SEMANTIC_IDS)
    quantiser.save(out / "embeddings" / SEMANTIC_IDS_FILE)
    items = embedding_table(np.arange(n_items), prefixes_of(full, DIMS), model_version, now,
                            semantic_ids=quantiser.encode_codes(full))
    write_embedding_table(items, out / "embeddings" / "items.parquet")
    q_texts = [f"category {c} item" for c in range(n_categories)]
    q_vecs = np.stack(
        [
            full[all_by_cat[c]].mean(0) if len(all_by_cat[c]) else full[0]
            for c in range(n_categories)
        ]
    )
    queries = embedding_table(q_texts, prefixes_of(q_vecs, DIMS), model_version, now,
                              key=QUERY_KEY)
    write_embedding_table(queries, out / "embeddings" / "queries.parquet")
    return SyntheticPaths(training_set, out / "embeddings", out / "world", model_version)
