"""One validator for every table of DESIGN section 3, used by `moon world validate` and at
every load.

It checks, per file: readable parquet, every contract column present with its exact type,
no unknown columns (``oracle_*`` and the typed extra columns of users / items aside), no nulls where the contract forbids them, value
ranges and allowed values, non-empty text, decodable images, unique IDs; and per world:
references between tables (every behaviour's item exists, ...). The first problem found is
raised as a :class:`DataError` naming the file, the column and the first bad row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError
from moon_rec.data.images import check_image
from moon_rec.data.schemas import (
    ORACLE_PREFIX,
    TABLES,
    ColumnSpec,
    TableSpec,
    extra_column_problem,
)

BATCH_ROWS = 65_536


@dataclass
class TableReport:
    """What validation saw of one table."""

    name: str
    files: list[Path]
    n_rows: int
    columns: list[str]


@dataclass
class WorldReport:
    """What validation saw of a world directory."""

    root: Path
    tables: dict[str, TableReport] = field(default_factory=dict)


def table_files(root: str | Path, name: str) -> list[Path]:
    """The parquet files of table ``name`` in a world directory.

    A table is ``ROOT/name.parquet`` or a folder ``ROOT/name/`` of ``*.parquet`` parts (read
    in name order). Returns [] when neither exists.
    """
    root = Path(root)
    single = root / f"{name}.parquet"
    folder = root / name
    if single.is_file():
        return [single]
    if folder.is_dir():
        return sorted(folder.glob("*.parquet"))
    return []


def _type_problem(actual: pa.DataType, expected: pa.DataType) -> str | None:
    if actual.equals(expected):
        return None
    if pa.types.is_timestamp(actual) and pa.types.is_timestamp(expected):
        if actual.tz is None:
            return f"timestamp without a time zone ({actual}); expected {expected}"
        if actual.tz not in ("UTC", "+00:00", "Etc/UTC"):
            return f"timestamp in zone {actual.tz!r}; expected {expected}"
        if actual.unit != expected.unit:
            return f"timestamp unit {actual.unit!r}; expected {expected}"
        return None  # UTC spelled differently: accepted
    return f"type {actual}, expected {expected}"


def check_columns(
    schema: pa.Schema, spec: TableSpec, file: str, names: list[str] | None = None
) -> None:
    """Raise DataError for a missing or mistyped column among ``names`` (default: all of
    ``spec``'s); a job that reads a few columns checks just those."""
    present = set(schema.names)
    wanted = spec.columns if names is None else tuple(spec.column(n) for n in names)
    for col in wanted:
        if col.name not in present:
            raise DataError(
                f"missing column (table '{spec.name}' needs: "
                f"{', '.join(c.name for c in wanted)})",
                file=file,
                column=col.name,
            )
        problem = _type_problem(schema.field(col.name).type, col.type)
        if problem:
            raise DataError(problem, file=file, column=col.name)


def check_schema(schema: pa.Schema, spec: TableSpec, file: str) -> None:
    """Raise DataError for a missing, mistyped or unknown column."""
    check_columns(schema, spec, file)
    known = {c.name for c in spec.columns}
    for name in schema.names:
        if name in known or name.startswith(ORACLE_PREFIX):
            continue
        problem = extra_column_problem(spec.name, name, schema.field(name).type)
        if problem:
            raise DataError(problem, file=file, column=name)


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    idx = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
    return int(idx[0]) if idx.size else None


def check_column(
    values: pa.Array | pa.ChunkedArray, col: ColumnSpec, file: str, offset: int, full_images: bool
) -> None:
    """Raise DataError for the first row of ``values`` that breaks ``col``'s rules."""

    def fail(local_row: int, why: str) -> None:
        raise DataError(why, file=file, column=col.name, row=offset + local_row)

    nulls = pc.is_null(values)
    if not col.nullable:
        bad = _first_true(nulls)
        if bad is not None:
            fail(bad, "null value where the contract forbids nulls")
    valid = pc.invert(nulls)
    if pa.types.is_floating(col.type):
        bad = _first_true(pc.and_(valid, pc.is_nan(values)))
        if bad is not None:
            fail(bad, "NaN value")
    if col.min_value is not None:
        below = pc.fill_null(pc.less(values, col.min_value), False)
        bad = _first_true(below)
        if bad is not None:
            fail(bad, f"value {values[bad].as_py()} below the minimum {col.min_value}")
    if col.max_value is not None:
        above = pc.fill_null(pc.greater(values, col.max_value), False)
        bad = _first_true(above)
        if bad is not None:
            fail(bad, f"value {values[bad].as_py()} above the maximum {col.max_value}")
    if col.allowed is not None:
        outside = pc.and_(valid, pc.invert(pc.is_in(values, pa.array(col.allowed))))
        bad = _first_true(pc.fill_null(outside, False))
        if bad is not None:
            fail(bad, f"value {values[bad].as_py()!r} not one of {list(col.allowed)}")
    if col.non_empty:
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
        bad = _first_true(pc.fill_null(empty, False))
        if bad is not None:
            fail(bad, "empty text")
    if col.image:
        for i, data in enumerate(values.to_pylist()):
            if data is None:
                continue
            why = check_image(data, full=full_images)
            if why:
                fail(i, why)


def first_duplicate_row(ids: np.ndarray) -> int | None:
    """The smallest row index whose value already appeared in an earlier row, or None."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size == 0:
        return None
    return int(order[dup + 1].min())


def iter_file_batches(
    path: Path, columns: list[str] | None, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Record batches of one parquet file, turning reader errors into DataError."""
    try:
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", file=str(path)) from exc


def validate_table(
    root: str | Path, name: str, *, full_images: bool = False, required: bool | None = None
) -> TableReport | None:
    """Validate every file of table ``name`` in world directory ``root``.

    Returns the report, or None for an absent optional table. Raises DataError on the first
    problem, naming file, column and row (rows count from 0 across the table's parts).
    """
    spec = TABLES[name]
    files = table_files(root, name)
    must = spec.required if required is None else required
    if not files:
        if must:
            raise DataError(
                f"table '{name}' not found (expected {name}.parquet or {name}/*.parquet)",
                file=str(root),
            )
        return None
    unique_cols = [c for c in spec.columns if c.unique]
    seen: dict[str, list[np.ndarray]] = {c.name: [] for c in unique_cols}
    offset = 0
    columns: list[str] = []
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable parquet file ({exc})", file=str(path)) from exc
        check_schema(schema, spec, str(path))
        columns = schema.names
        file_offset = 0
        for batch in iter_file_batches(path, [c.name for c in spec.columns]):
            for col in spec.columns:
                check_column(batch.column(col.name), col, str(path), file_offset, full_images)
            for col in unique_cols:
                seen[col.name].append(batch.column(col.name).to_numpy(zero_copy_only=False))
            file_offset += batch.num_rows
        offset += file_offset
    for col in unique_cols:
        ids = np.concatenate(seen[col.name]) if seen[col.name] else np.empty(0, np.int64)
        bad = first_duplicate_row(ids)
        if bad is not None:
            path, local = _locate(files, bad)
            raise DataError(f"duplicate id {int(ids[bad])}", file=str(path), column=col.name, row=local)
    return TableReport(name=name, files=files, n_rows=offset, columns=columns)


def _locate(files: list[Path], row: int) -> tuple[Path, int]:
    """Map a table-wide row number to (file, row within that file)."""
    for path in files:
        n = pq.ParquetFile(path).metadata.num_rows
        if row < n:
            return path, row
        row -= n
    return files[-1], row


def _read_ids(root: Path, table: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, is_null) of one int64 column over all parts; nulls read as 0."""
    parts = [pq.read_table(p, columns=[column]).column(column) for p in table_files(root, table)]
    column_ = pa.chunked_array([c for p in parts for c in p.chunks], pa.int64())
    is_null = np.asarray(pc.is_null(column_).to_numpy(zero_copy_only=False), dtype=bool)
    return column_.fill_null(0).to_numpy(), is_null


def check_references(root: str | Path, report: WorldReport) -> None:
    """Every reference between tables (``behaviors.item_id -> items.item_id``, ...) resolves."""
    root = Path(root)
    for name, spec in TABLES.items():
        if name not in report.tables:
            continue
        for column, target in spec.references.items():
            t_table, t_col = target.split(".")
            if t_table not in report.tables:
                continue
            known, _ = _read_ids(root, t_table, t_col)
            values, is_null = _read_ids(root, name, column)
            missing = ~np.isin(values, known) & ~is_null  # nulls only where the contract allows
            idx = np.flatnonzero(missing)
            if idx.size:
                path, local = _locate(report.tables[name].files, int(idx[0]))
                raise DataError(
                    f"value {int(values[idx[0]])} not found in {target}",
                    file=str(path),
                    column=column,
                    row=local,
                )


def validate_world(root: str | Path, *, full_images: bool = True) -> WorldReport:
    """Validate every table of a world directory, the references between them and its
    ``world.json`` (through its owner, ``moon_rec.data.io.read_world_meta``)."""
    # io imports this module (every load validates); its world.json reader comes in here
    from moon_rec.data.io import read_world_meta

    root = Path(root)
    if not root.is_dir():
        raise DataError("world directory not found", file=str(root))
    read_world_meta(root)
    report = WorldReport(root=root)
    for name in TABLES:
        table = validate_table(root, name, full_images=full_images)
        if table is not None:
            report.tables[name] = table
    check_references(root, report)
    return report
