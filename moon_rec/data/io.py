"""Reading and writing world tables (every load goes through the validator) and the world's
metadata, ``world.json``: this module is the one owner of both; ``train_end`` is the one
parser of the split time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec import runtime
from moon_rec.data.errors import DataError
from moon_rec.data.schemas import TABLES, extra_column_problem, full_schema
from moon_rec.data.validation import table_files, validate_table
from moon_rec.runtime import atomic_write_json

WORLD_META = "world.json"
# Keys every world.json has (a generated world adds its config, seed and statistics).
WORLD_META_KEYS: tuple[str, ...] = ("train_end_ts",)


def read_table(
    root: str | Path, name: str, columns: list[str] | None = None, *, validate: bool = True
) -> pa.Table:
    """Load table ``name`` of world directory ``root`` after validating it.

    Args:
        root: the world directory.
        name: one of ``moon_rec.data.schemas.TABLES``.
        columns: columns to return (default: all, ``oracle_*`` included).
        validate: run the contract checks first (image signatures only; the full image
            decode is ``moon world validate``'s job).

    Raises:
        DataError: naming file, column and first bad row.
    """
    if name not in TABLES:
        raise DataError(f"unknown table '{name}' (known: {', '.join(TABLES)})")
    if validate:
        validate_table(root, name)
    files = table_files(root, name)
    if not files:
        raise DataError(f"table '{name}' not found", file=str(root))
    try:
        parts = [pq.read_table(p, columns=columns) for p in files]
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"cannot read columns {columns}: {exc}", file=str(files[0])) from exc
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def has_table(root: str | Path, name: str) -> bool:
    return bool(table_files(root, name))


def read_world_meta(root: str | Path) -> dict[str, Any]:
    """The world's ``world.json`` (config, seed, split timestamps, summary statistics).

    Raises:
        DataError: naming the file (and key) when ``world.json`` is missing, unreadable, not
            a JSON object, lacks a key of ``WORLD_META_KEYS`` or has a ``train_end_ts`` that
            is not an ISO-8601 time with a zone.
    """
    path = Path(root) / WORLD_META
    if not path.is_file():
        raise DataError(f"{WORLD_META} not found", file=str(root))
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        file=str(path)) from exc
    except ValueError as exc:  # JSONDecodeError, or an integer of > 4300 digits
        raise DataError(f"invalid JSON ({exc})", file=str(path)) from exc
    except RecursionError as exc:
        raise DataError("invalid JSON (nested too deeply)", file=str(path)) from exc
    if not isinstance(meta, dict):
        raise DataError(f"expected a JSON object, got {type(meta).__name__}", file=str(path))
    for key in WORLD_META_KEYS:
        if key not in meta:
            raise DataError("missing key", file=str(path), column=key)
    if "config" in meta and not isinstance(meta["config"], dict):
        raise DataError("expected a JSON object", file=str(path), column="config")
    _parse_train_end(meta["train_end_ts"], str(path))
    return meta


def train_end(root_or_meta: str | Path | dict[str, Any]) -> datetime:
    """The world's split time ``train_end_ts`` (timezone-aware, UTC): train impressions
    before it, test at or after; items launched at or after it are cold.

    Args:
        root_or_meta: the world directory, or its ``world.json`` already read.
    """
    meta = root_or_meta if isinstance(root_or_meta, dict) else read_world_meta(root_or_meta)
    if "train_end_ts" not in meta:
        raise DataError("missing key", file=WORLD_META, column="train_end_ts")
    return _parse_train_end(meta["train_end_ts"], WORLD_META)


def _parse_train_end(value: Any, file: str) -> datetime:
    """``train_end_ts`` as a UTC datetime, or DataError naming ``file`` and the key."""
    if not isinstance(value, str):
        raise DataError(f"expected an ISO-8601 time string, got {type(value).__name__}",
                        file=file, column="train_end_ts")
    raw = value
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(f"not an ISO-8601 time: {raw!r}", file=file,
                        column="train_end_ts") from exc
    if ts.tzinfo is None:
        raise DataError(f"time without a zone: {raw!r}", file=file, column="train_end_ts")
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 9999 at a negative offset
        raise DataError(f"time out of range: {raw!r}", file=file, column="train_end_ts") from exc


def train_end_us(root_or_meta: str | Path | dict[str, Any]) -> int:
    """``train_end`` as integer microseconds since the epoch (the tables' timestamp unit)."""
    ts = train_end(root_or_meta)
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def write_world_meta(root: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(root) / WORLD_META
    return atomic_write_json(path, meta)


def atomic_write_parquet(table: pa.Table, path: Path, **kwargs: Any) -> Path:
    """Write ``table`` to ``path`` as zstd parquet via a temp file + rename (never a
    partial file); ``kwargs`` go to ``pyarrow.parquet.write_table``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with runtime.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", **kwargs)
    return path


def write_table(table: pa.Table, path: str | Path, name: str | None = None) -> Path:
    """Write ``table`` as parquet atomically (temp file + rename: never a partial file).

    With ``name``, the table is first cast to the contract schema of that table (plus its
    ``oracle_`` columns) so writers cannot drift from DESIGN section 3.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        table = conform(table, name)
    return atomic_write_parquet(table, path, row_group_size=16_384)


def conform(table: pa.Table, name: str) -> pa.Table:
    """Order and cast ``table``'s columns to the contract schema of table ``name``; the
    typed extra columns of ``users`` / ``items`` follow the contract's, in their order."""
    schema = full_schema(name)
    cols = [f for f in schema if f.name in table.column_names]
    if TABLES[name].extras:
        known = set(schema.names)
        cols += [pa.field(f.name, f.type) for f in table.schema if f.name not in known
                 and extra_column_problem(name, f.name, f.type) is None]
    missing = [f.name for f in TABLES[name].columns if f.name not in table.column_names]
    if missing:
        raise DataError(f"missing columns {missing}", file=name)
    return pa.table(
        {f.name: table.column(f.name).cast(f.type) for f in cols},
        schema=pa.schema(cols),
    )


def copy_world(src: str | Path, dst: str | Path) -> Path:
    """Validate world ``src`` (every table, the references, world.json) and copy its
    tables, ``id_maps/`` and ``world.json`` into ``dst``, replacing what is there; the copy
    is staged beside ``dst`` and moved in whole (a failed copy leaves ``dst`` as it was).

    Raises:
        DataError: naming file, column and row of the first problem of ``src``.
    """
    import os
    import shutil
    import tempfile

    from moon_rec.data.validation import validate_world

    src, dst = Path(src), Path(dst)
    validate_world(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.copy-", dir=dst.parent))
    try:
        for name in TABLES:
            for f in table_files(src, name):
                rel = f.relative_to(src)
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, stage / rel)
        if (src / "id_maps").is_dir():
            shutil.copytree(src / "id_maps", stage / "id_maps")
        shutil.copy2(src / WORLD_META, stage / WORLD_META)
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if dst.exists():
            os.replace(dst, old)
        os.replace(stage, dst)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dst
