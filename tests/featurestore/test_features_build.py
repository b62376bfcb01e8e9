"""``moon features build`` on a bad world (issue 27): an unknown item is named by file,
column and row, and a failed build leaves nothing in ``--out``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moon_rec.cli import main


def _world_with_unknown_item(tiny_world: Path, dest: Path, table: str, row: int) -> Path:
    world = dest / "world"
    shutil.copytree(tiny_world, world)
    path = world / f"{table}.parquet"
    t = pq.read_table(path)
    ids = t.column("item_id").to_pylist()
    ids[row] = 10**15  # in no catalog
    t = t.set_column(t.schema.get_field_index("item_id"), "item_id",
                     pa.array(ids, t.schema.field("item_id").type))
    pq.write_table(t, path)
    return world


@pytest.mark.parametrize(("table", "row"), [("behaviors", 5), ("impressions", 17)])
def test_an_unknown_item_is_named_by_file_and_row_and_nothing_is_left(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, row: int
) -> None:
    world = _world_with_unknown_item(tiny_world, tmp_path, table, row)
    out = tmp_path / "features"
    assert main(["features", "build", "--world", str(world), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {world / f'{table}.parquet'}: column 'item_id': row {row}: "
                          f"unknown item_id {10**15}"), err
    assert not out.exists()


def test_a_failed_build_leaves_no_folder_and_keeps_an_existing_one(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "features"
    for argv in (["--world", str(tmp_path / "nowhere")],
                 ["--world", str(tiny_world), "--seq-len", "0"]):
        assert main(["features", "build", *argv, "--out", str(out)]) == 2
        assert "error: " in capsys.readouterr().err
        assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["features", "build", "--world", str(tmp_path / "nowhere"),
                 "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["features", "build", "--world", str(tiny_world), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"keep.txt", "user_sequences.parquet",
                                               "item_features.parquet", "user_clicks.parquet",
                                               "user_category_clicks.parquet",
                                               "user_brand_clicks.parquet", "item_ctr.parquet",
                                               "user_attributes.parquet"}
