"""Bad input is rejected naming file, column and first bad row (DESIGN section 3)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from moon_rec.cli import main
from moon_rec.data.errors import DataError
from moon_rec.data.io import read_table, train_end
from moon_rec.data.validation import validate_table, validate_world

Corrupt = Callable[[pa.Table], pa.Table]


def _set(table: pa.Table, column: str, array: pa.Array) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, pa.field(column, array.type), array)


def _replace_row(column: str, row: int, value: object, type_: pa.DataType | None = None) -> Corrupt:
    def corrupt(t: pa.Table) -> pa.Table:
        values = t.column(column).to_pylist()
        values[row] = value
        return _set(t, column, pa.array(values, type_ or t.schema.field(column).type))

    return corrupt


def _drop(column: str) -> Corrupt:
    return lambda t: t.drop_columns([column])


def _cast(column: str, type_: pa.DataType) -> Corrupt:
    return lambda t: _set(t, column, t.column(column).cast(type_).combine_chunks())


def _strip_zone(column: str) -> Corrupt:
    return lambda t: _set(t, column, pc.cast(t.column(column), pa.int64()).cast(pa.timestamp("us")).combine_chunks())


def _add(column: str) -> Corrupt:
    return lambda t: t.append_column(column, pa.array([1] * t.num_rows, pa.int64()))


def _add_list(column: str) -> Corrupt:
    return lambda t: t.append_column(column, pa.array([[1]] * t.num_rows, pa.list_(pa.int64())))


CASES: list[tuple[str, Corrupt, str, int | None, str]] = [
    # table, corruption, column named, row named, words in the message
    ("items", _drop("title"), "title", None, "missing column"),
    ("items", _cast("item_id", pa.int32()), "item_id", None, "type int32, expected int64"),
    ("items", _replace_row("title", 7, None), "title", 7, "null"),
    ("items", _replace_row("title", 9, "   "), "title", 9, "empty text"),
    ("items", _replace_row("image", 5, b"\x89PNG\r\n\x1a\ngarbage"), "image", 5, "undecodable image"),
    ("items", _replace_row("image", 6, b"not an image"), "image", 6, "not a PNG"),
    ("items", _replace_row("item_id", 11, 3), "item_id", 11, "duplicate id 3"),
    ("items", _replace_row("price", 4, -1.0), "price", 4, "below the minimum"),
    ("items", _replace_row("price", 4, float("nan")), "price", 4, "NaN"),
    ("items", _strip_zone("launch_ts"), "launch_ts", None, "without a time zone"),
    ("items", _add_list("colour"), "colour", None, "extra columns of table 'items' are int64"),
    ("items", _add("Colour"), "Colour", None, "lower-case"),
    ("behaviors", _add("colour"), "colour", None, "unknown column"),
    ("image_queries", _replace_row("image", 2, b""), "image", 2, "empty image"),
    ("image_queries", _replace_row("image", 3, None), "image", 3, "null"),
    ("image_queries", _drop("item_id"), "item_id", None, "missing column"),
    ("users", _replace_row("user_id", 3, 1), "user_id", 3, "duplicate id 1"),
    ("users", _strip_zone("signup_ts"), "signup_ts", None, "without a time zone"),
    ("behaviors", _replace_row("action", 0, "view"), "action", 0, "not one of"),
    ("behaviors", _replace_row("ts", 1, None), "ts", 1, "null"),
    ("impressions", _replace_row("clicked", 12, 2), "clicked", 12, "above the maximum"),
    ("impressions", _replace_row("position", 3, -1), "position", 3, "below the minimum"),
    ("impressions", _cast("user_id", pa.string()), "user_id", None, "type string, expected int64"),
    ("categories", _replace_row("name", 0, ""), "name", 0, "empty text"),
]


@pytest.fixture
def world_copy(tiny_world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(tiny_world, dst)
    return dst


def _corrupt(world: Path, table: str, corrupt: Corrupt) -> Path:
    path = world / f"{table}.parquet"
    pq.write_table(corrupt(pq.read_table(path)), path)
    return path


@pytest.mark.parametrize("table,corrupt,column,row,words", CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_corrupted_table_fails_naming_file_column_and_row(
    world_copy: Path, table: str, corrupt: Corrupt, column: str, row: int | None, words: str
) -> None:
    path = _corrupt(world_copy, table, corrupt)
    with pytest.raises(DataError) as info:
        validate_world(world_copy)
    err = info.value
    assert err.file == str(path)
    assert err.column == column
    if row is not None:
        assert err.row == row
    assert words in str(err)
    assert str(path) in str(err) and f"column '{column}'" in str(err)
    # every load goes through the same validator
    with pytest.raises(DataError):
        read_table(world_copy, table)


def test_text_only_items_validate_and_the_rest_is_still_checked(world_copy: Path) -> None:
    """A null catalog image is a text-only item (DESIGN section 3), in every world; the other
    item columns keep their checks."""
    items = pq.read_table(world_copy / "items.parquet")
    no_images = _set(items, "image", pa.nulls(items.num_rows, pa.binary()))
    pq.write_table(no_images, world_copy / "items.parquet")
    validate_world(world_copy)
    assert read_table(world_copy, "items").column("image").null_count == items.num_rows
    pq.write_table(_replace_row("price", 2, -3.0)(no_images), world_copy / "items.parquet")
    with pytest.raises(DataError, match="below the minimum") as info:
        validate_world(world_copy)
    assert (info.value.column, info.value.row) == ("price", 2)


def test_unreadable_parquet_is_named(world_copy: Path) -> None:
    path = world_copy / "users.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="not a readable parquet file") as info:
        validate_table(world_copy, "users")
    assert info.value.file == str(path)


def test_dangling_reference_is_named(world_copy: Path) -> None:
    path = _corrupt(world_copy, "behaviors", _replace_row("item_id", 4, 999_999))
    with pytest.raises(DataError, match=r"999999 not found in items\.item_id") as info:
        validate_world(world_copy)
    assert (info.value.file, info.value.column, info.value.row) == (str(path), "item_id", 4)


def test_missing_required_table_and_optional_table(world_copy: Path) -> None:
    (world_copy / "categories.parquet").unlink()
    validate_world(world_copy)  # categories is optional
    (world_copy / "users.parquet").unlink()
    with pytest.raises(DataError, match="table 'users' not found"):
        validate_world(world_copy)


def test_rows_are_counted_across_parts(world_copy: Path) -> None:
    """A table split in parts names the part file and the row within it."""
    table = pq.read_table(world_copy / "users.parquet")
    (world_copy / "users.parquet").unlink()
    parts = world_copy / "users"
    parts.mkdir()
    pq.write_table(table.slice(0, 100), parts / "part-00000.parquet")
    bad = _replace_row("user_id", 10, 5)(table.slice(100))
    pq.write_table(bad, parts / "part-00001.parquet")
    with pytest.raises(DataError, match="duplicate id 5") as info:
        validate_table(world_copy, "users")
    assert info.value.file == str(parts / "part-00001.parquet")
    assert info.value.row == 10


def test_cli_validate_exits_2_with_a_named_error_and_no_traceback(world_copy: Path) -> None:
    assert main(["world", "validate", str(world_copy)]) == 0
    _corrupt(world_copy, "impressions", _replace_row("clicked", 12, 2))
    proc = subprocess.run(
        [sys.executable, "-m", "moon_rec.cli", "world", "validate", str(world_copy)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "impressions.parquet: column 'clicked': row 12" in proc.stderr
    assert "Traceback" not in proc.stderr


# world.json (issue 14, case 11): `moon world validate` says "valid" only with a world.json
# that is a JSON object with train_end_ts, an ISO-8601 time with a zone.
WORLD_META_CASES = [
    (None, None, "world.json not found"),
    (b"\x00garbage{", None, "invalid JSON"),
    (b"\xff\xfe{}", None, "not UTF-8 text"),
    (b"[1, 2]", None, "expected a JSON object, got list"),
    (b'"train_end_ts"', None, "expected a JSON object, got str"),
    (b"{}", "train_end_ts", "missing key"),
    (b'{"train_end_ts": "yesterday"}', "train_end_ts", "not an ISO-8601 time"),
    (b'{"train_end_ts": "2026-01-25T00:00:00"}', "train_end_ts", "time without a zone"),
    (b'{"train_end_ts": 20260125}', "train_end_ts", "expected an ISO-8601 time string, got int"),
    (b'{"train_end_ts": "2026-01-25T00:00:00Z", "config": [1]}', "config", "expected a JSON object"),
    (b"[" * 100_000, None, "invalid JSON"),
    (b'{"n": ' + b"9" * 5_000 + b"}", None, "invalid JSON (Exceeds the limit"),
]


@pytest.mark.parametrize("content,key,words", WORLD_META_CASES,
                         ids=[c[2] + (f"-{i}") for i, c in enumerate(WORLD_META_CASES)])
def test_validate_checks_world_json(
    world_copy: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, key: str | None,
    words: str,
) -> None:
    meta = world_copy / "world.json"
    if content is None:
        meta.unlink()
    else:
        meta.write_bytes(content)
    assert main(["world", "validate", str(world_copy), "--fast"]) == 2
    captured = capsys.readouterr()
    assert "valid" not in captured.out
    named = str(world_copy) if content is None else str(meta)
    prefix = f"error: {named}: " + (f"column '{key}': " if key else "")
    assert captured.err.startswith(prefix) and words in captured.err, captured.err
    with pytest.raises(DataError, match=re.escape(words)):
        validate_world(world_copy, full_images=False)


def test_validate_accepts_a_utc_and_an_offset_train_end(world_copy: Path) -> None:
    meta = world_copy / "world.json"
    data = json.loads(meta.read_text())
    for ts in ("2026-01-25T00:00:00Z", "2026-01-25T08:00:00+08:00"):
        meta.write_text(json.dumps({**data, "train_end_ts": ts}))
        validate_world(world_copy, full_images=False)
        assert train_end(world_copy) == datetime(2026, 1, 25, tzinfo=UTC)


def test_typed_extra_columns_of_users_and_items_are_valid(world_copy: Path) -> None:
    """users / items keep a source's typed attributes (int64, float64, string, bool)."""
    for table in ("users", "items"):
        path = world_copy / f"{table}.parquet"
        t = pq.read_table(path)
        n = t.num_rows
        t = (t.append_column("age", pa.array([None] + [30] * (n - 1), pa.int64()))
             .append_column("score", pa.array([0.5] * n, pa.float64()))
             .append_column("club", pa.array(["gold"] * n, pa.string()))
             .append_column("active", pa.array([True] * n, pa.bool_())))
        pq.write_table(t, path)
    validate_world(world_copy)
    assert read_table(world_copy, "users").column("age")[0].as_py() is None
