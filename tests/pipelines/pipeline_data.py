"""Test data of the pipeline tests: a hand-made catalog with bad rows and a deterministic
stand-in for the MOON encoder (tests only: the embed job itself loads the real
``MoonEncoder`` from a checkpoint)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from moon_rec.data.images import encode_png
from moon_rec.data.schemas import TIMESTAMP

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class StandInEncoder:
    """Deterministic, batch-independent product encoder with the MoonEncoder interface.

    Each output row depends only on its own title and image (a fixed random projection of
    pooled pixels plus hashed title bytes), so batching and sharding cannot change it.
    """

    image_size = 16
    dims = (32, 64, 128, 256)

    def __init__(self, version: str = "stub-v1") -> None:
        self.model_version = version
        g = torch.Generator().manual_seed(int(hashlib.sha256(version.encode()).hexdigest()[:8], 16))
        self.proj = torch.randn(3 * 4 * 4 + 64, 256, generator=g)
        self.calls = 0
        self.items = 0

    def encode_product(self, titles: Sequence[str], images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.items += len(titles)
        assert images.shape[1:] == (3, self.image_size, self.image_size)
        pooled = F.adaptive_avg_pool2d(images, 4).reshape(len(titles), -1)
        text = torch.zeros(len(titles), 64)
        for i, t in enumerate(titles):
            for b in t.encode():
                text[i, b % 64] += 1.0
        return F.normalize(torch.cat([pooled, text], 1) @ self.proj, dim=-1)


def make_catalog(
    path: Path, n: int = 30, *, bad: bool = True, seed: int = 0, image_size: int = 16
) -> pa.Table:
    """Write ``path/items.parquet`` with n items (ids shuffled), plus two bad rows."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(100, 100 + n)).tolist()
    titles = [f"item {i} red dress" for i in ids]
    images: list[bytes] = [
        encode_png(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)) for _ in ids
    ]
    if bad:
        ids += [7, 8]
        titles += ["   ", "broken photo"]
        images += [
            encode_png(np.zeros((image_size, image_size, 3), np.uint8)),
            b"\x89PNG\r\n\x1a\nnot",
        ]
    k = len(ids)
    table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "category_id": pa.array([1] * k, pa.int64()),
            "brand_id": pa.array([1] * k, pa.int64()),
            "title": pa.array(titles),
            "attributes": pa.array([""] * k),
            "price": pa.array([1.0] * k),
            "launch_ts": pa.array([T0] * k, TIMESTAMP),
            "image": pa.array(images, pa.binary()),
            "spu_id": pa.array([1] * k, pa.int64()),
        }
    )
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "items.parquet")
    return table
