"""Import a user's own catalog (CSV or JSON lines + an image folder) into the validated
``items`` table, so the rest of the pipeline runs on real data.

Input columns (header names; aliases in brackets):
    item_id (id)                 required, an integer in 0 .. 2^63-1, unique
    title                        required, non-empty
    image (image_file, image_path)  required, a file name relative to --images; a name
                                 that leads outside the folder (``..``, an absolute path, a
                                 symlink to elsewhere) is refused
    category (category_id, category_name)  required: an integer id or a name
    attributes                   optional text (default "")
    brand (brand_id, brand_name) optional: an integer id or a name (default 0)
    price                        optional float >= 0 (default 0.0)
    launch_ts (launch_date)      optional ISO-8601; a value without a zone is rejected
                                 (default: the import time)
    spu_id                       optional integer in 0 .. 2^63-1 (default: item_id)
Names of categories and brands get stable ids (sorted order, from 1); a ``categories``
table is written too, with ``--look-driven`` naming the look-driven categories.

Files are UTF-8 (a byte-order mark is skipped). Field lengths and image sizes are bounded
by :class:`ImportLimits`. The first bad record stops the import with a DataError naming the
file, the field and the line (CSV: the header is line 1); nothing is written then: the
tables and ``world.json`` are built and validated in a staging folder beside ``--out`` and
moved in only when all of them are good.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from moon_rec.data.errors import DataError
from moon_rec.data.images import ImageLimits, decode_prepared, encode_png
from moon_rec.data.io import WORLD_META, write_table, write_world_meta
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
INT64_MAX = 2**63 - 1
# an integer written as text: ASCII digits only (int() would also take "1_000" and "١٢")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


class ImportLimits(BaseModel):
    """Bounds on one catalog record, so a broken or hostile file gets an error naming the
    field rather than a traceback or an unbounded allocation.

    Args:
        max_title_chars: characters of a title (``--max-title-chars``).
        max_attributes_chars: characters of the attribute text (``--max-attributes-chars``).
        max_field_chars: characters of any other field (ids, image name, category,
            brand, price, launch time).
        max_record_chars: characters of one CSV field or one JSON line the reader takes at
            all (above the field limits, so the field is named).
        max_image_bytes: bytes of one image file.
        max_image_pixels: width x height of one image, read from its header before it is
            decoded (``--max-image-pixels``).
        max_image_side, max_image_aspect, max_image_decode_bytes: the other bounds of
            ``moon_rec.data.images.ImageLimits`` (the longer side, long / short side, and
            the memory of decoding and padding), also decided from the header.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_title_chars: int = Field(default=1_000, ge=1)
    max_attributes_chars: int = Field(default=10_000, ge=1)
    max_field_chars: int = Field(default=1_000, ge=1)
    max_record_chars: int = Field(default=1_000_000, ge=1)
    max_image_bytes: int = Field(default=50 * 2**20, ge=1)
    max_image_pixels: int = Field(default=25_000_000, ge=1)
    max_image_side: int = Field(default=ImageLimits().max_side, ge=1)
    max_image_aspect: float = Field(default=ImageLimits().max_aspect, ge=1.0, allow_inf_nan=False)
    max_image_decode_bytes: int = Field(default=ImageLimits().max_decode_bytes, ge=1)

    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels, max_side=self.max_image_side,
                           max_aspect=self.max_image_aspect,
                           max_decode_bytes=self.max_image_decode_bytes)

    def field_limit(self, name: str) -> int:
        if name == "title":
            return self.max_title_chars
        if name == "attributes":
            return self.max_attributes_chars
        return self.max_field_chars


def _records(
    path: Path, limits: ImportLimits
) -> Generator[tuple[int, dict[str, Any]], None, None]:
    """(line number, record) of a CSV (header line 1) or JSON-lines file."""
    if not path.is_file():
        raise DataError("catalog file not found", file=str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_records(path, limits)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from _json_records(path, limits)
    else:
        raise DataError("expected a .csv or .jsonl catalog", file=str(path))


def _not_utf8(path: Path) -> DataError:
    """The error for a file that is not UTF-8, naming the first bad line and byte: the
    decoder works on blocks ahead of the reader, so its position is found again here."""
    with path.open("rb") as fh:
        offset = 0
        for line_no, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return DataError(f"not UTF-8 text ({exc.reason} at byte {offset + exc.start} "
                                 "of the file)", file=str(path), row=line_no)
            offset += len(line)
    return DataError("not UTF-8 text", file=str(path))


def _csv_records(path: Path, limits: ImportLimits) -> Iterator[tuple[int, dict[str, Any]]]:
    # csv's field limit is process-wide; raised to the record limit while this file is read
    old_limit = csv.field_size_limit(limits.max_record_chars)
    reader: Any = None
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first header
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            seen: set[str] = set()
            for name in header:
                if name in seen:
                    raise DataError("duplicate column in the header", file=str(path),
                                    column=name, row=1)
                seen.add(name)
            for values in reader:
                if not any(v.strip() for v in values):
                    continue  # a blank line
                if len(values) > len(header):  # a stray comma or an unquoted field
                    raise DataError(f"{len(values)} fields, more than the header's "
                                    f"{len(header)}", file=str(path), row=reader.line_num)
                yield reader.line_num, dict(zip(header, values, strict=False))
    except csv.Error as exc:
        line = reader.line_num if reader is not None else None
        raise DataError(f"unreadable CSV ({exc}; fields are limited to "
                        f"{limits.max_record_chars:,} characters)", file=str(path), row=line) from exc
    except UnicodeDecodeError as exc:
        raise _not_utf8(path) from exc
    finally:
        csv.field_size_limit(old_limit)


def _json_records(path: Path, limits: ImportLimits) -> Iterator[tuple[int, dict[str, Any]]]:
    line_no = 0
    try:
        with path.open(encoding="utf-8-sig") as fh:
            while True:
                # bounded read: one huge line is refused, not loaded whole
                line = fh.readline(limits.max_record_chars + 2)
                if not line:
                    return
                line_no += 1
                text = line.rstrip("\r\n")
                if len(text) > limits.max_record_chars:
                    raise DataError(f"record longer than {limits.max_record_chars:,} characters",
                                    file=str(path), row=line_no)
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except ValueError as exc:  # JSONDecodeError, or an integer of > 4300 digits
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    raise DataError(f"invalid JSON ({why})", file=str(path), row=line_no) from exc
                except RecursionError as exc:
                    raise DataError("invalid JSON (nested too deeply)", file=str(path),
                                    row=line_no) from exc
                if not isinstance(rec, dict):
                    raise DataError("expected a JSON object", file=str(path), row=line_no)
                yield line_no, rec
    except UnicodeDecodeError as exc:
        raise _not_utf8(path) from exc


def _show(value: Any, n: int = 40) -> str:
    """``repr`` of a bad value, shortened: the message must not carry a 200k-character field."""
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(str(value)):,} characters)"


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is one (an int, an integral float, or ASCII digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    return None


class _Record:
    """One catalog record and where it is (file, line), with typed, bounded field access."""

    def __init__(self, rec: dict[str, Any], file: str, line: int, limits: ImportLimits) -> None:
        self.rec, self.file, self.line, self.limits = rec, file, line, limits

    def error(self, name: str, why: str) -> DataError:
        return DataError(why, file=self.file, column=name, row=self.line)

    def raw(self, name: str) -> Any:
        """The first non-empty value of ``name``'s aliases, or None."""
        for alias in ALIASES[name]:
            value = self.rec.get(alias)
            if value is None or value == "":
                continue
            if isinstance(value, str) and len(value) > self.limits.field_limit(name):
                raise self.error(name, f"{len(value):,} characters, more than the limit of "
                                       f"{self.limits.field_limit(name):,}")
            if isinstance(value, (dict, list)):
                raise self.error(name, f"expected a plain value, got a JSON {type(value).__name__}")
            return value
        return None

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self.error(name, f"expected text, got {value!r}")
        return str(value)

    def integer(self, name: str) -> int | None:
        """An id: an integer in 0 .. 2^63-1 (the contract's int64 ids are >= 0)."""
        value = self.raw(name)
        if value is None:
            return None
        v = _as_int(value)
        if v is None:
            raise self.error(name, f"expected an integer, got {_show(value)}")
        if v < 0:
            raise self.error(name, f"negative id {v} (ids are >= 0)")
        if v > INT64_MAX:
            raise self.error(name, f"id {_show(v)} does not fit int64 (ids are < 2^63)")
        return v

    def label(self, name: str) -> int | str | None:
        """A category or brand: an integer id (as ``integer``) or a name."""
        value = self.raw(name)
        if value is None or _as_int(value) is not None:
            return self.integer(name)
        if isinstance(value, bool):
            raise self.error(name, f"expected an id or a name, got {value!r}")
        label = str(value).strip()
        if not label:
            raise self.error(name, "empty name")
        return label

    def price(self) -> float:
        value = self.raw("price")
        if value is None:
            return 0.0
        try:
            if isinstance(value, bool):
                raise TypeError
            price = float(value)
        except (TypeError, ValueError, OverflowError):
            raise self.error("price", f"expected a number, got {_show(value)}") from None
        if not np.isfinite(price) or price < 0:
            raise self.error("price", f"price must be a finite number >= 0, got {_show(value)}")
        return price

    def timestamp(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise self.error(name, f"not an ISO-8601 timestamp: {_show(value)}") from None
        if ts.tzinfo is None:
            raise self.error(name, f"timestamp without a time zone: {_show(value)}")
        try:
            return ts.astimezone(UTC)
        except OverflowError:
            raise self.error(name, f"timestamp out of range: {_show(value)}") from None


def _label_ids(values: list[int | str], file: str, column: str) -> tuple[list[int], dict[str, int]]:
    """Integers stay; names get stable ids in sorted order, after the largest integer."""
    names = sorted({v for v in values if isinstance(v, str)})
    start = max((v for v in values if isinstance(v, int)), default=0) + 1
    if names and start + len(names) - 1 > INT64_MAX:
        raise DataError("no int64 ids left for the names after the largest integer id",
                        file=file, column=column)
    mapping = {name: start + i for i, name in enumerate(names)}
    return [v if isinstance(v, int) else mapping[v] for v in values], mapping


def image_path(images: Path, name: str) -> Path:
    """The file ``name`` names inside the folder ``images``, symlinks resolved.

    Raises:
        ValueError: the name is absolute, or leads outside ``images`` (``..``, a symlink
            to elsewhere), or cannot be resolved (a NUL byte, a symlink loop).
    """
    if "\0" in name:
        raise ValueError("image name contains a NUL byte")
    if Path(name).is_absolute():
        raise ValueError(f"image name must be relative to --images, got the absolute path {_show(name)}")
    root = images.resolve()
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ValueError(f"cannot resolve image path {_show(name)} ({exc})") from None
    if not path.is_relative_to(root):
        raise ValueError(f"image path {_show(name)} leads outside --images {root} (to {path})")
    return path


def _load_image(images: Path, rec: _Record, size: int) -> bytes:
    name = rec.text("image")
    assert name is not None  # a required field
    try:
        path = image_path(images, name)
    except ValueError as exc:
        raise rec.error("image", str(exc)) from None
    if not path.is_file():
        raise rec.error("image", f"image file not found: {path}")
    limits = rec.limits
    try:
        n_bytes = path.stat().st_size
        if n_bytes > limits.max_image_bytes:
            raise rec.error("image", f"image file of {n_bytes:,} bytes, more than the limit of "
                                     f"{limits.max_image_bytes:,} ({path})")
        data = path.read_bytes()
    except OSError as exc:
        raise rec.error("image", f"cannot read image {path} ({exc.strerror or exc})") from None
    try:  # the header decides the limits before a (possibly huge) decode
        prepared = decode_prepared(data, size, where=str(path), limits=limits.image_limits())
    except DataError as exc:
        raise rec.error("image", f"{exc.reason} ({path})") from None
    return encode_png(prepared)


def import_catalog(
    items_path: str | Path,
    images_dir: str | Path,
    out: str | Path,
    *,
    image_size: int = 64,
    look_driven: tuple[str, ...] = (),
    limits: ImportLimits | None = None,
) -> dict[str, Any]:
    """Convert a catalog file + image folder into ``OUT/items.parquet``, ``categories``
    and ``world.json``.

    Raises:
        DataError: naming the file, field and line of the first bad record; nothing is
            written then (everything is staged beside ``out`` and moved in at the end).
    """
    items_path, images_dir, out = Path(items_path), Path(images_dir), Path(out)
    limits = limits or ImportLimits()
    if not images_dir.is_dir():
        raise DataError("image folder not found", file=str(images_dir))
    file = str(items_path)
    now = datetime.now(UTC)
    cols: dict[str, list[Any]] = {k: [] for k in ALIASES}
    lines: list[int] = []
    seen: dict[int, int] = {}
    with contextlib.closing(_records(items_path, limits)) as records:
        for line_no, raw in records:
            rec = _Record(raw, file, line_no, limits)
            for name in REQUIRED:
                if rec.raw(name) is None:
                    raise rec.error(name, f"missing required field (one of {list(ALIASES[name])})")
            item_id = rec.integer("item_id")
            assert item_id is not None
            if item_id in seen:
                raise rec.error("item_id", f"duplicate item_id {item_id} (first on line {seen[item_id]})")
            seen[item_id] = line_no
            title = (rec.text("title") or "").strip()
            if not title:
                raise rec.error("title", "empty title")
            spu = rec.integer("spu_id")
            brand = rec.label("brand")
            launch = rec.timestamp("launch_ts")
            lines.append(line_no)
            cols["item_id"].append(item_id)
            cols["title"].append(title)
            cols["category"].append(rec.label("category"))
            cols["attributes"].append(rec.text("attributes") or "")
            cols["brand"].append(brand if brand is not None else 0)
            cols["price"].append(rec.price())
            cols["launch_ts"].append(launch if launch is not None else now)
            cols["spu_id"].append(spu if spu is not None else item_id)
            cols["image"].append(_load_image(images_dir, rec, image_size))
    if not cols["item_id"]:
        raise DataError("no records", file=file)
    category_ids, cat_names = _label_ids(cols["category"], file, "category")
    brand_ids, _ = _label_ids(cols["brand"], file, "brand")
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
    names_by_id = {v: k for k, v in cat_names.items()}
    all_cat_ids = sorted(set(category_ids))
    categories = pa.table({
        "category_id": pa.array(all_cat_ids, pa.int64()),
        "parent_id": pa.array([None] * len(all_cat_ids), pa.int64()),
        "name": pa.array([names_by_id.get(c, str(c)) for c in all_cat_ids], pa.string()),
        "look_driven": pa.array([names_by_id.get(c) in look_driven for c in all_cat_ids], pa.bool_()),
    })
    summary = {
        "source": file,
        "n_items": items.num_rows,
        "n_categories": len(all_cat_ids),
        "image_size": image_size,
        "imported_at": now.isoformat(),
        "train_end_ts": now.isoformat(),
    }
    _write_staged(out, items, categories, summary, file, lines)
    return summary


def _write_staged(
    out: Path, items: pa.Table, categories: pa.Table, meta: dict[str, Any], file: str,
    lines: list[int],
) -> None:
    """Write and validate the tables and world.json in a staging folder beside ``out``,
    then move them into ``out``; on any error nothing reaches ``out``. A validation error
    is re-raised against the catalog file and its line (row r of items is ``lines[r]``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        write_table(items, stage / "items.parquet", name="items")
        write_table(categories, stage / "categories.parquet", name="categories")
        for name in ("items", "categories"):
            try:
                validate_table(stage, name, full_images=True)
            except DataError as exc:
                row = lines[exc.row] if name == "items" and exc.row is not None else None
                raise DataError(exc.reason, file=file, column=exc.column, row=row) from exc
        write_world_meta(stage, meta)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("items.parquet", "categories.parquet", WORLD_META):
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
