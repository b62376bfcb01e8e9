"""Reading and writing world tables: every load goes through the validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError
from moon_rec.data.schemas import TABLES, full_schema
from moon_rec.data.validation import table_files, validate_table
from moon_rec.runtime import atomic_path, atomic_write_json

WORLD_META = "world.json"


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
    """The world's ``world.json`` (config, seed, split timestamps, summary statistics)."""
    path = Path(root) / WORLD_META
    if not path.is_file():
        raise DataError(f"{WORLD_META} not found", file=str(root))
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc})", file=str(path)) from exc
    if "train_end_ts" not in meta:
        raise DataError("missing key", file=str(path), column="train_end_ts")
    return meta


def write_world_meta(root: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(root) / WORLD_META
    return atomic_write_json(path, meta)


def write_table(table: pa.Table, path: str | Path, name: str | None = None) -> Path:
    """Write ``table`` as parquet atomically (temp file + rename: never a partial file).

    With ``name``, the table is first cast to the contract schema of that table (plus its
    ``oracle_`` columns) so writers cannot drift from DESIGN section 3.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        table = conform(table, name)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=16_384)
    return path


def conform(table: pa.Table, name: str) -> pa.Table:
    """Order and cast ``table``'s columns to the contract schema of table ``name``."""
    schema = full_schema(name)
    cols = [f for f in schema if f.name in table.column_names]
    missing = [f.name for f in TABLES[name].columns if f.name not in table.column_names]
    if missing:
        raise DataError(f"missing columns {missing}", file=name)
    return pa.table(
        {f.name: table.column(f.name).cast(f.type) for f in cols},
        schema=pa.schema(cols),
    )
