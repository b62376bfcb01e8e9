"""The world, loaded once into memory for encoder training and evaluation.

Images are decoded to uint8 tensors [N, 3, H, W] (64x64 x 3 bytes = 12 KB an image, so the
small world's 10k items + 20k photos fit in ~0.4 GB). The split follows world.json: image
queries with ``ts >= train_end_ts`` are the evaluation queries and never enter training;
behaviours after it are the held-out text-recall pairs; items launched after it are cold
(their catalog content is not used to train). A text-only world (every catalog image null,
such as MovieLens) has ``images`` None, no photo queries, and its products are encoded from
``product_text(title, attributes)`` (``product_titles``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from moon_rec.data.errors import DataError
from moon_rec.data.images import decode_image, decode_prepared
from moon_rec.data.io import has_table, read_table, read_world_meta, train_end_us
from moon_rec.data.rows import RowIndex
from moon_rec.encoders.base import product_text


def decode_images(blobs: list[bytes | None], size: int, *, where: str) -> torch.Tensor:
    """PNG bytes -> uint8 [N, 3, size, size], each through ``prepare_image``.

    Raises:
        DataError: naming ``where`` and the row of a missing image.
    """
    out = torch.empty((len(blobs), 3, size, size), dtype=torch.uint8)
    for i, b in enumerate(blobs):
        if b is None:
            raise DataError("missing image", file=where, column="image", row=i)
        a = decode_prepared(b, size, where=f"{where} row {i}")
        out[i] = torch.from_numpy(a).permute(2, 0, 1)
    return out


def _ts_us(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


@dataclass
class WorldData:
    """Everything the encoder trains and is evaluated on, as arrays.

    Items (row-aligned): item_id, category_id, spu_id, launch_us, title, attributes,
    images uint8 [N, 3, S, S] (None: a text-only catalog). Image queries: query_id, query_item_id, query_us,
    query_images uint8 [Q, 3, S, S]. Behaviours: user_id, item_id, ts, action, query_text,
    query_image_id (-1 when none). ``exposure_category`` [C] holds impression counts by
    category id when the world has impressions (the online exposure of stage 2).
    """

    root: Path
    train_end_us: int
    image_size: int
    item_id: np.ndarray
    category_id: np.ndarray
    spu_id: np.ndarray
    launch_us: np.ndarray
    title: list[str]
    attributes: list[str]
    images: torch.Tensor | None
    query_id: np.ndarray
    query_item_id: np.ndarray
    query_us: np.ndarray
    query_images: torch.Tensor
    beh_user: np.ndarray
    beh_item: np.ndarray
    beh_us: np.ndarray
    beh_action: np.ndarray
    beh_text: list[str]
    beh_image_query: np.ndarray
    exposure: dict[int, float]

    @property
    def n_items(self) -> int:
        return len(self.item_id)

    @property
    def text_only(self) -> bool:
        """No catalog photos: products are their text (``product_titles``)."""
        return self.images is None

    @property
    def product_titles(self) -> list[str]:
        """[N] what each product's text is: the title beside a photo, the title and the
        attributes (``product_text``) in a text-only catalog."""
        return self._product_titles

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Catalog rows of item ids (all must exist)."""
        return self._index.require(np.asarray(item_ids, dtype=np.int64), what="items",
                                   column="item_id", file="items")

    def __post_init__(self) -> None:
        self._index = RowIndex(self.item_id)
        self._query_row = {int(q): r for r, q in enumerate(self.query_id.tolist())}
        self._product_titles = (
            [product_text(t, a) for t, a in zip(self.title, self.attributes, strict=True)]
            if self.images is None else self.title
        )

    def query_rows(self, query_ids: np.ndarray) -> np.ndarray:
        return np.array([self._query_row[int(q)] for q in query_ids], dtype=np.int64)

    @property
    def warm_item_mask(self) -> np.ndarray:
        """Items launched before the end of training (their content may train)."""
        return self.launch_us < self.train_end_us

    @property
    def eval_query_mask(self) -> np.ndarray:
        """Image queries of the evaluation (ts >= train_end_ts)."""
        return self.query_us >= self.train_end_us


def load_world(root: str | Path, *, with_behaviors: bool = True) -> WorldData:
    """Read a world directory into memory (validated loads)."""
    root = Path(root)
    meta = read_world_meta(root)
    train_end = train_end_us(meta)
    items = read_table(root, "items", ["item_id", "category_id", "spu_id", "title", "attributes",
                                       "launch_ts", "image"])
    size = int(meta.get("config", {}).get("image_size", 0) or 0)
    blobs = items.column("image").to_pylist()
    images: torch.Tensor | None = None
    if items.num_rows and items.column("image").null_count == items.num_rows:
        size = 0  # a text-only catalog
    else:
        first = next((b for b in blobs if b is not None), None)
        if first is not None:
            size = decode_image(first, where="items").shape[0]
        # a catalog is all photos or text-only: a missing photo among photos is an error
        images = decode_images(blobs, size, where=str(root / "items"))
    iq = read_table(root, "image_queries", ["query_id", "item_id", "ts", "image"])
    q_blobs = iq.column("image").to_pylist()
    if images is None and q_blobs:  # photos of text-only items: at their own size
        size = decode_image(q_blobs[0], where=str(root / "image_queries")).shape[0]
    q_images = decode_images(q_blobs, size, where=str(root / "image_queries"))
    if with_behaviors:
        beh = read_table(root, "behaviors")
        b_user = beh.column("user_id").to_numpy()
        b_item = beh.column("item_id").to_numpy()
        b_us = _ts_us(beh.column("ts"))
        b_action = np.asarray(beh.column("action").to_pylist(), dtype=object)
        b_text = [t or "" for t in beh.column("query_text").to_pylist()]
        b_img = np.asarray(beh.column("query_image_id").fill_null(-1).to_numpy(), dtype=np.int64)
    else:
        b_user = b_item = b_us = b_img = np.zeros(0, np.int64)
        b_action = np.zeros(0, dtype=object)
        b_text = []
    exposure: dict[int, float] = {}
    if has_table(root, "impressions"):
        imp = read_table(root, "impressions", ["item_id"], validate=False)
        ids, counts = np.unique(imp.column("item_id").to_numpy(), return_counts=True)
        cat_of = dict(zip(items.column("item_id").to_numpy().tolist(),
                          items.column("category_id").to_numpy().tolist(), strict=True))
        for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
            k = int(cat_of.get(i, -1))
            exposure[k] = exposure.get(k, 0.0) + float(c)
    return WorldData(
        root=root,
        train_end_us=train_end,
        image_size=size,
        item_id=items.column("item_id").to_numpy(),
        category_id=items.column("category_id").to_numpy(),
        spu_id=items.column("spu_id").to_numpy(),
        launch_us=_ts_us(items.column("launch_ts")),
        title=items.column("title").to_pylist(),
        attributes=[a or "" for a in items.column("attributes").to_pylist()],
        images=images,
        query_id=iq.column("query_id").to_numpy(),
        query_item_id=iq.column("item_id").to_numpy(),
        query_us=_ts_us(iq.column("ts")),
        query_images=q_images,
        beh_user=b_user,
        beh_item=b_item,
        beh_us=b_us,
        beh_action=b_action,
        beh_text=b_text,
        beh_image_query=b_img,
        exposure=exposure,
    )
