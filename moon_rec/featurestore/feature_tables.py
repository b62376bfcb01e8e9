"""Batch job: world tables -> the offline feature tables of the Feast views.

Writes ``DIR/user_sequences.parquet`` (behaviour sequences) and ``DIR/item_features.parquet``
(item attributes and counts); the embedding parts come from ``moon embed``.

    moon features build --world W --out DIR [--seq-len 50]
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from moon_rec.data.io import has_table, read_table, write_table
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN
from moon_rec.featurestore.tables import build_item_features, build_user_sequences

ITEM_COLUMNS = ["item_id", "category_id", "brand_id", "spu_id", "price", "launch_ts"]


def build_feature_tables(
    world: str | Path,
    out: str | Path,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    stats_every: timedelta = timedelta(days=1),
) -> dict[str, object]:
    """Build both feature tables of ``world`` into ``out``; returns row counts and paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = read_table(world, "items", columns=ITEM_COLUMNS)
    behaviors = read_table(world, "behaviors", columns=["user_id", "item_id", "ts", "action"])
    impressions = (
        read_table(world, "impressions", columns=["item_id", "ts", "clicked"])
        if has_table(world, "impressions")
        else None
    )
    sequences = build_user_sequences(behaviors, items, max_len=seq_len)
    item_features = build_item_features(items, behaviors, impressions, stats_every=stats_every)
    seq_path = write_table(sequences, out / "user_sequences.parquet")
    item_path = write_table(item_features, out / "item_features.parquet")
    return {
        "user_sequences": str(seq_path),
        "user_sequence_rows": sequences.num_rows,
        "item_features": str(item_path),
        "item_feature_rows": item_features.num_rows,
        "seq_len": seq_len,
    }
