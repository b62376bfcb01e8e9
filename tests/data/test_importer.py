"""`moon data import`: a user's own catalog becomes the validated items table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moon_rec.cli import main
from moon_rec.data.errors import DataError
from moon_rec.data.images import decode_image
from moon_rec.data.importer import import_catalog
from moon_rec.data.io import read_table, read_world_meta

FIELDS = ["item_id", "title", "attributes", "category", "brand", "price", "launch_ts", "image"]


def _catalog(tmp_path: Path, rows: list[dict[str, object]], kind: str = "csv") -> tuple[Path, Path]:
    images = tmp_path / "imgs"
    images.mkdir(exist_ok=True)
    for i, name in enumerate(["a.png", "b.jpg", "c.png"]):
        arr = np.full((40 + 10 * i, 30, 3), 60 * i, np.uint8)
        Image.fromarray(arr).save(images / name)
    path = tmp_path / f"catalog.{kind}"
    if kind == "csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for r in rows:
                writer.writerow(r)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, images


def _rows() -> list[dict[str, object]]:
    return [
        {"item_id": 10, "title": "red cotton tee", "attributes": "color: red", "category": "tops",
         "brand": "Acme", "price": "9.5", "launch_ts": "2026-03-01T10:00:00+00:00", "image": "a.png"},
        {"item_id": 11, "title": "blue jeans", "attributes": "", "category": "pants",
         "brand": "Acme", "price": "30", "launch_ts": "2026-03-02T10:00:00Z", "image": "b.jpg"},
        {"item_id": 12, "title": "desk lamp", "attributes": "material: metal", "category": "home",
         "brand": "Lumo", "price": "", "launch_ts": "", "image": "c.png"},
    ]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_import_writes_a_valid_items_table(tmp_path: Path, kind: str) -> None:
    path, images = _catalog(tmp_path, _rows(), kind)
    out = tmp_path / "world"
    summary = import_catalog(path, images, out, image_size=32, look_driven=("tops", "pants"))
    assert summary["n_items"] == 3
    items = read_table(out, "items")
    assert items.column("item_id").to_pylist() == [10, 11, 12]
    assert items.column("spu_id").to_pylist() == [10, 11, 12]
    assert items.column("price").to_pylist() == [9.5, 30.0, 0.0]
    cats = items.column("category_id").to_pylist()
    assert cats[0] != cats[1] and len(set(cats)) == 3
    brands = items.column("brand_id").to_pylist()
    assert brands[0] == brands[1] != brands[2]
    for data in items.column("image").to_pylist():
        assert decode_image(data).shape == (32, 32, 3)
    categories = read_table(out, "categories").to_pylist()
    look = {c["name"]: c["look_driven"] for c in categories}
    assert look == {"home": False, "pants": True, "tops": True}
    assert "train_end_ts" in read_world_meta(out)


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"title": ""}, "title", "missing required field"),
        ({"item_id": "abc"}, "item_id", "expected an integer"),
        ({"item_id": 10}, "item_id", "duplicate item_id 10"),
        ({"image": "missing.png"}, "image", "image file not found"),
        ({"price": "-3"}, "price", "price must be"),
        ({"launch_ts": "2026-03-01T10:00:00"}, "launch_ts", "without a time zone"),
        ({"launch_ts": "yesterday"}, "launch_ts", "not an ISO-8601"),
    ],
)
def test_bad_record_names_line_and_field_and_writes_nothing(
    tmp_path: Path, change: dict[str, object], field: str, words: str
) -> None:
    rows = _rows()
    rows[1] = {**rows[1], **change}
    path, images = _catalog(tmp_path, rows)
    out = tmp_path / "world"
    with pytest.raises(DataError, match=words) as info:
        import_catalog(path, images, out)
    assert info.value.file == str(path)
    assert info.value.column == field
    assert info.value.row == 3  # header is line 1, the second record is line 3
    assert not (out / "items.parquet").exists()


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    path, images = _catalog(tmp_path, _rows())
    (images / "b.jpg").write_bytes(b"\xff\xd8\xffnot really a jpeg")
    with pytest.raises(DataError, match="undecodable image"):
        import_catalog(path, images, tmp_path / "world")


def test_cli_import_and_bad_input_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, images = _catalog(tmp_path, _rows(), "jsonl")
    assert main(["data", "import", "--items", str(path), "--images", str(images), "--out", str(tmp_path / "w")]) == 0
    assert main(["data", "import", "--items", str(tmp_path / "nope.csv"), "--images", str(images),
                 "--out", str(tmp_path / "w2")]) == 2
    assert "catalog file not found" in capsys.readouterr().err
