"""Import a user's own catalog (CSV or JSON lines + an image folder) into the validated
``items`` table, so the rest of the pipeline runs on real data.

Input columns (header names; aliases in brackets):
    item_id (id)                 required, integer, unique
    title                        required, non-empty
    image (image_file, image_path)  required, a file name relative to --images
    category (category_id, category_name)  required: an integer id or a name
    attributes                   optional text (default "")
    brand (brand_id, brand_name) optional: an integer id or a name (default 0)
    price                        optional float >= 0 (default 0.0)
    launch_ts (launch_date)      optional ISO-8601; a value without a zone is rejected
                                 (default: the import time)
    spu_id                       optional integer (default: item_id)
Names of categories and brands get stable ids (sorted order, from 1); a ``categories``
table is written too, with ``--look-driven`` naming the look-driven categories.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from moon_rec.data.errors import DataError
from moon_rec.data.images import decode_prepared, encode_png
from moon_rec.data.io import write_table, write_world_meta
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.data.validation import validate_table

ALIASES: dict[str, tuple[str, ...]] = {
    "item_id": ("item_id", "id"),
    "title": ("title",),
    "image": ("image", "image_file", "image_path"),
    "category": ("category", "category_id", "category_name"),
    "attributes": ("attributes",),
    "brand": ("brand", "brand_id", "brand_name"),
    "price": ("price",),
    "launch_ts": ("launch_ts", "launch_date"),
    "spu_id": ("spu_id",),
}
REQUIRED = ("item_id", "title", "image", "category")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a CSV (header line 1) or JSON-lines file."""
    if not path.is_file():
        raise DataError("catalog file not found", file=str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            for line_no, row in enumerate(csv.DictReader(fh), start=2):
                yield line_no, dict(row)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON ({exc.msg})", file=str(path), row=line_no) from exc
                if not isinstance(rec, dict):
                    raise DataError("expected a JSON object", file=str(path), row=line_no)
                yield line_no, rec
    else:
        raise DataError("expected a .csv or .jsonl catalog", file=str(path))


def _field(rec: dict[str, Any], name: str) -> Any:
    for alias in ALIASES[name]:
        value = rec.get(alias)
        if value is not None and value != "":
            return value
    return None


def _int(value: Any, where: dict[str, Any]) -> int:
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"expected an integer, got {value!r}", **where) from None


def _label_ids(values: list[Any]) -> tuple[list[int], dict[str, int]]:
    """Integers stay; names get stable ids 1..n in sorted order (after the largest int)."""
    names = sorted({str(v) for v in values if not _is_int(v)})
    ints = [int(v) for v in values if _is_int(v)]
    start = max(ints, default=0) + 1
    mapping = {name: start + i for i, name in enumerate(names)}
    return [int(v) if _is_int(v) else mapping[str(v)] for v in values], mapping


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()


def _timestamp(value: Any, where: dict[str, Any]) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"not an ISO-8601 timestamp: {value!r}", **where) from None
    if ts.tzinfo is None:
        raise DataError(f"timestamp without a time zone: {value!r}", **where)
    return ts.astimezone(UTC)


def _load_image(images: Path, name: str, size: int, where: dict[str, Any]) -> bytes:
    path = (images / name).resolve()
    if not path.is_file():
        raise DataError(f"image file not found: {path}", **where)
    where_img = f"{where['file']} row {where['row']} ({path})"
    return encode_png(decode_prepared(path.read_bytes(), size, where=where_img))


def import_catalog(
    items_path: str | Path,
    images_dir: str | Path,
    out: str | Path,
    *,
    image_size: int = 64,
    look_driven: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Convert a catalog file + image folder into ``OUT/items.parquet`` (and categories).

    Raises:
        DataError: naming the file, field and line of the first bad record; nothing is
            written then (the output is built in memory and written atomically).
    """
    items_path, images_dir, out = Path(items_path), Path(images_dir), Path(out)
    if not images_dir.is_dir():
        raise DataError("image folder not found", file=str(images_dir))
    now = datetime.now(UTC)
    cols: dict[str, list[Any]] = {k: [] for k in ALIASES}
    seen: dict[int, int] = {}
    for line_no, rec in _records(items_path):
        where: dict[str, Any] = {"file": str(items_path), "row": line_no}
        for name in REQUIRED:
            if _field(rec, name) is None:
                raise DataError(f"missing required field (one of {list(ALIASES[name])})", column=name, **where)
        item_id = _int(_field(rec, "item_id"), {**where, "column": "item_id"})
        if item_id < 0:
            raise DataError("negative id", column="item_id", **where)
        if item_id in seen:
            raise DataError(f"duplicate item_id {item_id} (first on line {seen[item_id]})", column="item_id", **where)
        seen[item_id] = line_no
        title = str(_field(rec, "title")).strip()
        if not title:
            raise DataError("empty title", column="title", **where)
        price_raw = _field(rec, "price")
        try:
            price = float(price_raw) if price_raw is not None else 0.0
        except (TypeError, ValueError):
            raise DataError(f"expected a number, got {price_raw!r}", column="price", **where) from None
        if not np.isfinite(price) or price < 0:
            raise DataError(f"price must be a finite number >= 0, got {price_raw!r}", column="price", **where)
        launch = _field(rec, "launch_ts")
        spu = _field(rec, "spu_id")
        cols["item_id"].append(item_id)
        cols["title"].append(title)
        cols["image"].append(_load_image(images_dir, str(_field(rec, "image")), image_size, {**where, "column": "image"}))
        cols["category"].append(_field(rec, "category"))
        cols["attributes"].append(str(_field(rec, "attributes") or ""))
        cols["brand"].append(_field(rec, "brand") if _field(rec, "brand") is not None else 0)
        cols["price"].append(price)
        cols["launch_ts"].append(_timestamp(launch, {**where, "column": "launch_ts"}) if launch is not None else now)
        cols["spu_id"].append(_int(spu, {**where, "column": "spu_id"}) if spu is not None else item_id)
    if not cols["item_id"]:
        raise DataError("no records", file=str(items_path))
    category_ids, cat_names = _label_ids(cols["category"])
    brand_ids, _ = _label_ids(cols["brand"])
    unknown = set(look_driven) - set(cat_names)
    if unknown:
        raise DataError(f"--look-driven names unknown categories {sorted(unknown)}", column="look_driven")
    items = pa.table({
        "item_id": pa.array(cols["item_id"], pa.int64()),
        "category_id": pa.array(category_ids, pa.int64()),
        "brand_id": pa.array(brand_ids, pa.int64()),
        "title": pa.array(cols["title"], pa.string()),
        "attributes": pa.array(cols["attributes"], pa.string()),
        "price": pa.array(cols["price"], pa.float64()),
        "launch_ts": pa.array(cols["launch_ts"], TIMESTAMP),
        "image": pa.array(cols["image"], pa.binary()),
        "spu_id": pa.array(cols["spu_id"], pa.int64()),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_table(items, out / "items.parquet", name="items")
    names_by_id = {v: k for k, v in cat_names.items()}
    all_cat_ids = sorted(set(category_ids))
    categories = pa.table({
        "category_id": pa.array(all_cat_ids, pa.int64()),
        "parent_id": pa.array([None] * len(all_cat_ids), pa.int64()),
        "name": pa.array([names_by_id.get(c, str(c)) for c in all_cat_ids], pa.string()),
        "look_driven": pa.array([names_by_id.get(c) in look_driven for c in all_cat_ids], pa.bool_()),
    })
    write_table(categories, out / "categories.parquet", name="categories")
    validate_table(out, "items", full_images=True)
    summary = {
        "source": str(items_path),
        "n_items": items.num_rows,
        "n_categories": len(all_cat_ids),
        "image_size": image_size,
        "imported_at": now.isoformat(),
        "train_end_ts": now.isoformat(),
    }
    write_world_meta(out, summary)
    return summary
