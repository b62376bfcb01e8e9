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


# --- hostile and broken catalogs (issue 14, case 11): `moon data import` exits 2 with
# `error: FILE: column 'C': row R: why`, and nothing is written.


def _import_cli(path: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["data", "import", "--items", str(path), "--images", str(images),
                 "--out", str(out), *extra])


def _assert_refused(
    capsys: pytest.CaptureFixture[str], status: int, path: Path, out: Path, column: str | None,
    row: int | None, words: str,
) -> str:
    err = capsys.readouterr().err
    assert status == 2, err
    where = [str(path)] + ([f"column '{column}'"] if column else []) + ([f"row {row}"] if row else [])
    assert err.startswith("error: " + ": ".join(where) + ": "), err
    assert words in err, err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written...
    assert not list(out.parent.glob(f".{out.name}.import-*"))  # ...and no staging left over
    return err


def _secret(tmp_path: Path) -> Path:
    """A valid image outside the image folder (what a path escape would read)."""
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    return secret


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("name_of", [
    lambda secret: "../secret.png",
    lambda secret: "../../" * 8 + "etc/passwd",
    lambda secret: str(secret),  # an absolute path
    lambda secret: "/etc/passwd",
    lambda secret: "link.png",  # a symlink in the folder pointing outside it
], ids=["dotdot", "etc-passwd", "absolute-secret", "absolute-etc", "symlink-out"])
def test_image_names_are_confined_to_the_image_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, name_of: object
) -> None:
    secret = _secret(tmp_path)
    rows = _rows()
    rows[1] = {**rows[1], "image": name_of(secret)}  # type: ignore[operator]
    path, images = _catalog(tmp_path, rows, kind)
    (images / "link.png").symlink_to(secret)
    out = tmp_path / "world"
    line = 3 if kind == "csv" else 2
    err = _assert_refused(capsys, _import_cli(path, images, out), path, out, "image", line, "")
    assert "outside --images" in err or "absolute path" in err


def test_symlinks_and_dotdot_inside_the_image_folder_are_fine(tmp_path: Path) -> None:
    rows = _rows()
    path, images = _catalog(tmp_path, rows)
    (images / "sub").mkdir()
    (images / "sub" / "inner.png").symlink_to(images / "a.png")
    rows[0]["image"], rows[1]["image"] = "sub/inner.png", "sub/../b.jpg"
    path, images = _catalog(tmp_path, rows)
    assert import_catalog(path, images, tmp_path / "world")["n_items"] == 3


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("item_id", 2**63, "does not fit int64"),
        ("item_id", 10**30, "does not fit int64"),
        ("item_id", -1, "negative id -1"),
        ("item_id", 1.5, "expected an integer, got 1.5"),
        ("item_id", "1.5", "expected an integer, got '1.5'"),
        ("item_id", True, "expected an integer, got True"),
        ("item_id", "1_000", "expected an integer"),
        ("item_id", float("inf"), "expected an integer"),
        ("spu_id", 2**63, "does not fit int64"),
        ("spu_id", -5, "negative id -5"),
        ("category", "-4", "negative id -4"),
        ("category", "   ", "empty name"),
        ("brand", 2**64, "does not fit int64"),
        ("price", 10**400, "expected a number"),
        ("price", True, "expected a number"),
        ("launch_ts", "9999-12-31T23:59:59-05:00", "timestamp out of range"),
        ("title", ["a", "list"], "expected a plain value"),
    ],
)
def test_bad_ids_and_values_are_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: object, words: str
) -> None:
    rows = _rows()
    rows[1] = {**rows[1], field: value}
    path = tmp_path / "catalog.jsonl"
    _, images = _catalog(tmp_path, _rows())
    # json.dumps writes inf as Infinity and 10**400 as digits: both parse back as such
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "world"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, field, 2, words)


@pytest.mark.parametrize("line,words", [
    ('{"item_id": ' + "9" * 5_000 + "}", "invalid JSON (Exceeds the limit"),
    ("[" * 100_000, "invalid JSON (nested too deeply)"),
    ('{"item_id": 1', "invalid JSON (Expecting"),
    ("[1, 2]", "expected a JSON object"),
])
def test_broken_json_lines_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, words: str
) -> None:
    path, images = _catalog(tmp_path, _rows(), "jsonl")
    path.write_text(path.read_text() + line + "\n")
    out = tmp_path / "world"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, None, 4, words)


def test_the_largest_int64_id_is_fine(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["item_id"] = 2**63 - 1
    path, images = _catalog(tmp_path, rows)
    import_catalog(path, images, tmp_path / "world")
    assert read_table(tmp_path / "world", "items").column("item_id")[0].as_py() == 2**63 - 1


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("field,limit", [("title", "1,000"), ("attributes", "10,000"), ("image", "1,000")])
def test_an_overlong_field_is_named_with_its_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, field: str, limit: str
) -> None:
    rows = _rows()
    rows[1] = {**rows[1], field: "x" * 200_000}
    path, images = _catalog(tmp_path, rows, kind)
    out = tmp_path / "world"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, field,
                    3 if kind == "csv" else 2, f"200,000 characters, more than the limit of {limit}")


def test_field_limits_are_configurable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows()
    rows[1] = {**rows[1], "attributes": "y" * 200_000, "title": "t" * 1_500}
    path, images = _catalog(tmp_path, rows)
    assert _import_cli(path, images, tmp_path / "w", "--max-attributes-chars", "200000",
                       "--max-title-chars", "2000") == 0
    capsys.readouterr()
    assert len(read_table(tmp_path / "w", "items").column("attributes")[1].as_py()) == 200_000
    assert _import_cli(path, images, tmp_path / "w2", "--max-title-chars", "0") == 2
    assert "--max-title-chars" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_record_past_the_reader_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    rows = _rows()
    rows[1] = {**rows[1], "attributes": "z" * 1_200_000}
    path, images = _catalog(tmp_path, rows, kind)
    out = tmp_path / "world"
    words = "field larger than field limit" if kind == "csv" else "record longer than 1,000,000"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, None,
                    3 if kind == "csv" else 2, words)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path, kind: str) -> None:
    path, images = _catalog(tmp_path, _rows(), kind)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    import_catalog(path, images, tmp_path / "world")
    assert read_table(tmp_path / "world", "items").column("item_id").to_pylist() == [10, 11, 12]


def test_not_utf8_and_duplicate_header_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, images = _catalog(tmp_path, _rows())
    data = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*data[:2], b"12,caf\xe9 au lait,,home,,,,c.png\r\n"]))
    out = tmp_path / "world"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, None, 3,
                    f"not UTF-8 text (invalid continuation byte at byte {len(b''.join(data[:2])) + 6}")
    path.write_text("item_id,title,title,image,category\n1,a,b,a.png,x\n")
    _assert_refused(capsys, _import_cli(path, images, out), path, out, "title", 1,
                    "duplicate column")


def test_a_failed_import_keeps_the_previous_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables and world.json are staged and validated beside --out, then moved in: an
    error at any point (here: the validator, after the tables were written) leaves --out
    as it was and no staging folder behind, and names the catalog line of the bad row."""
    import moon_rec.data.importer as importer

    path, images = _catalog(tmp_path, _rows())
    out = tmp_path / "world"
    import_catalog(path, images, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = _rows()
    rows[2]["title"] = "another lamp"
    path, images = _catalog(tmp_path, rows)

    def fail(root: Path, name: str, **kwargs: object) -> None:
        assert (Path(root) / f"{name}.parquet").is_file()
        raise DataError("refused by the validator", file=str(Path(root) / name), column="title", row=2)

    monkeypatch.setattr(importer, "validate_table", fail)
    assert _import_cli(path, images, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: column 'title': row 4: refused by the validator")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".world.import-*"))


# --- issue 27: tall images and extra CSV fields exit 2 naming the row ----------------------
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize(("width", "height"), [(16, 1_048_576), (1024, 16_384)])
def test_a_small_tall_image_exits_2_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, width: int, height: int
) -> None:
    from hostile_images import zeros_png

    path, images = _catalog(tmp_path, _rows(), kind)
    (images / "b.jpg").write_bytes(zeros_png(width, height))  # 16-17 KB, row 2 of 3
    out = tmp_path / "world"
    err = _assert_refused(capsys, _import_cli(path, images, out), path, out, "image",
                          3 if kind == "csv" else 2, f"image of {width:,} x {height:,} pixels")
    assert "a side longer than the limit of 8,192" in err


def test_the_image_side_and_aspect_limits_are_configurable(tmp_path: Path) -> None:
    from moon_rec.data.importer import ImportLimits

    path, images = _catalog(tmp_path, _rows())  # 30 x 40, 30 x 50 and 30 x 60 photos
    with pytest.raises(DataError, match="a side longer than the limit of 45") as info:
        import_catalog(path, images, tmp_path / "w1", limits=ImportLimits(max_image_side=45))
    assert info.value.column == "image" and info.value.row == 3
    with pytest.raises(DataError, match=r"aspect ratio 1\.7:1") as info:
        import_catalog(path, images, tmp_path / "w2", limits=ImportLimits(max_image_aspect=1.5))
    assert info.value.row == 3
    import_catalog(path, images, tmp_path / "w3", limits=ImportLimits(max_image_aspect=2))
    assert read_table(tmp_path / "w3", "items").num_rows == 3


def test_a_csv_row_with_more_fields_than_the_header_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, images = _catalog(tmp_path, _rows())
    lines = path.read_text().splitlines()
    lines[2] += ",surplus"  # row 2 (line 3): one field more than the header
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "world"
    _assert_refused(capsys, _import_cli(path, images, out), path, out, None, 3,
                    f"{len(FIELDS) + 1} fields, more than the header's {len(FIELDS)}")
