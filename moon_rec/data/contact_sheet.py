"""A contact sheet: catalog photos beside the users' photos of the same items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from moon_rec.data.errors import DataError
from moon_rec.data.images import decode_image
from moon_rec.data.io import has_table, read_table


def contact_sheet(
    root: str | Path, out: str | Path, n: int = 16, queries_per_item: int = 2, scale: int = 2
) -> Path:
    """Write a PNG grid: one row per item (catalog photo, then up to ``queries_per_item``
    image queries of it), captioned with category and title.

    Items are the first ``n`` items that have image queries, spread over categories.

    Returns:
        the path of the PNG written.
    """
    if n < 1:
        raise DataError("must be >= 1", column="n")
    items = read_table(root, "items", ["item_id", "category_id", "title", "image"])
    queries = (
        read_table(root, "image_queries", ["query_id", "item_id", "image"])
        if has_table(root, "image_queries")
        else None
    )
    names: dict[int, str] = {}
    if has_table(root, "categories"):
        cats = read_table(root, "categories", ["category_id", "name"])
        names = dict(zip(cats.column("category_id").to_pylist(), cats.column("name").to_pylist(), strict=True))
    # one item per category in turn, so the sheet shows the variety
    by_cat: dict[int, list[int]] = {}
    q_items = set(queries.column("item_id").to_pylist()) if queries is not None else set()
    for row, (item_id, cat) in enumerate(
        zip(items.column("item_id").to_pylist(), items.column("category_id").to_pylist(), strict=True)
    ):
        if queries is None or item_id in q_items:
            by_cat.setdefault(cat, []).append(row)
    chosen: list[int] = []
    while len(chosen) < n and any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(chosen) < n:
                chosen.append(by_cat[cat].pop(0))
    if not chosen:
        raise DataError("no items to show", file=str(root))
    tiles: list[list[np.ndarray]] = []
    captions: list[str] = []
    for row in chosen:
        item_id = items.column("item_id")[row].as_py()
        tile = [decode_image(items.column("image")[row].as_py(), where=f"items row {row}")]
        if queries is not None:
            mask = pc.equal(queries.column("item_id"), item_id)
            for data in queries.filter(mask).column("image").to_pylist()[:queries_per_item]:
                tile.append(decode_image(data, where=f"image_queries item {item_id}"))
        tiles.append(tile)
        cat = items.column("category_id")[row].as_py()
        captions.append(f"#{item_id} {names.get(cat, cat)}: {items.column('title')[row].as_py()}")
    size = tiles[0][0].shape[0] * scale
    cols = 1 + queries_per_item
    text_w = 330
    pad = 4
    sheet = Image.new("RGB", (cols * (size + pad) + text_w, len(tiles) * (size + pad) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), "catalog photo | user photos (image queries) of the same item", fill="black")
    for r, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        y = 24 + r * (size + pad)
        for c, img in enumerate(tile):
            im = Image.fromarray(img).resize((size, size), Image.Resampling.NEAREST)
            sheet.paste(im, (c * (size + pad), y))
        draw.text((cols * (size + pad) + 4, y + size // 2 - 6), caption[:60], fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
