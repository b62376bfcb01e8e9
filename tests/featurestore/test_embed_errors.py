"""`moon embed` on a corrupted world (issue 14, case 11): exit 2 with `error: FILE: column
'C': row R: why`, no traceback, and nothing written; a previous output stays as it was."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moon_rec.cli import main

N_ROWS = 40  # a slice of the tiny world keeps the one real embedding run short


@pytest.fixture(scope="module")
def checkpoint(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained MoonEncoder checkpoint (a real one: the CLI loads it)."""
    from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder

    titles = pq.read_table(tiny_world / "items.parquet", columns=["title"]).column(0).to_pylist()
    cfg = EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1)
    out = tmp_path_factory.mktemp("embed_errors") / "ckpt"
    return Path(build_encoder(cfg, MoonTokenizer.train(titles, vocab_size=300)).save_pretrained(out))


@pytest.fixture
def world(tiny_world: Path, tmp_path: Path) -> Path:
    """A copy of the tiny world's first catalog rows, to corrupt."""
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(tiny_world / "world.json", w / "world.json")
    items = pq.read_table(tiny_world / "items.parquet").slice(0, N_ROWS)
    pq.write_table(items, w / "items.parquet")
    return w


def _embed(world: Path, checkpoint: Path, out: Path) -> int:
    return main(["embed", "--world", str(world), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--no-progress", "--batch-size", "16"])


def _set_ids(values: Callable[[list[int | None]], list[int | None]]) -> Callable[[Path], str]:
    def corrupt(world: Path) -> str:
        path = world / "items.parquet"
        t = pq.read_table(path)
        ids = values(t.column("item_id").to_pylist())
        pq.write_table(t.set_column(0, "item_id", pa.array(ids, pa.int64())), path)
        return str(path)

    return corrupt


def _with(ids: list[int | None], row: int, value: int | None) -> list[int | None]:
    ids[row] = value
    return ids


def _garbage(world: Path) -> str:
    (world / "items.parquet").write_bytes(b"\x00garbage bytes, not parquet" * 40)
    return str(world / "items.parquet")


def _drop_id(world: Path) -> str:
    path = world / "items.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["item_id"]), path)
    return str(path)


def _string_ids(world: Path) -> str:
    path = world / "items.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(0, "item_id", t.column("item_id").cast(pa.string())), path)
    return str(path)


def _parts_with_a_duplicate(world: Path) -> str:
    """Two parts; the second repeats an id of the first at its row 10."""
    t = pq.read_table(world / "items.parquet")
    (world / "items.parquet").unlink()
    (world / "items").mkdir()
    pq.write_table(t.slice(0, 20), world / "items" / "part-00000.parquet")
    second = t.slice(20)
    ids = second.column("item_id").to_pylist()
    ids[10] = t.column("item_id")[3].as_py()
    pq.write_table(second.set_column(0, "item_id", pa.array(ids, pa.int64())),
                   world / "items" / "part-00001.parquet")
    return str(world / "items" / "part-00001.parquet")


def _part_is_a_directory(world: Path) -> str:
    t = pq.read_table(world / "items.parquet")
    (world / "items.parquet").unlink()
    (world / "items").mkdir()
    pq.write_table(t, world / "items" / "part-00000.parquet")
    (world / "items" / "part-00001.parquet").mkdir()
    return str(world / "items" / "part-00001.parquet")


def _no_items(world: Path) -> str:
    (world / "items.parquet").unlink()
    return str(world)


CASES: list[tuple[str, Callable[[Path], str], str]] = [
    # name, corruption (returns the file to be named), what follows "error: FILE: "
    ("garbage", _garbage, "not a readable parquet file (Parquet magic bytes"),
    ("no-item_id", _drop_id, "column 'item_id': missing column"),
    ("string-ids", _string_ids, "column 'item_id': type string, expected int64"),
    ("null-id", _set_ids(lambda ids: _with(ids, 5, None)),
     "column 'item_id': row 5: null value"),
    ("null-ids", _set_ids(lambda ids: [None if i in (9, 12) else v for i, v in enumerate(ids)]),
     "column 'item_id': row 9: null value"),
    ("negative-id", _set_ids(lambda ids: _with(ids, 5, -3)),
     "column 'item_id': row 5: value -3 below the minimum 0"),
    ("duplicate-id", _set_ids(lambda ids: _with(ids, 7, ids[2])),
     "column 'item_id': row 7: duplicate item_id"),
    ("duplicate-across-parts", _parts_with_a_duplicate,
     "column 'item_id': row 10: duplicate item_id"),
    ("part-is-a-directory", _part_is_a_directory, "not a readable parquet file ("),
    ("no-items", _no_items, "table 'items' not found"),
]


@pytest.mark.parametrize("corrupt,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_corrupted_catalog_exits_2_naming_file_column_and_row(
    world: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    corrupt: Callable[[Path], str], words: str,
) -> None:
    file = corrupt(world)
    out = tmp_path / "emb"
    assert _embed(world, checkpoint, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file}: {words}"), err
    assert "Traceback" not in err and "duplicate item_id in the catalog" not in err
    assert not out.exists()


def test_a_bad_catalog_leaves_the_previous_output_as_it_was(
    world: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "emb"
    assert _embed(world, checkpoint, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert any(name.startswith("part-") for name in before)
    capsys.readouterr()
    _set_ids(lambda ids: _with(ids, 4, -1))(world)
    assert _embed(world, checkpoint, out) == 2
    assert "row 4: value -1 below the minimum 0" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
