"""`moon data import hm`: a dozen-row fixture in the exact H&M layout (articles.csv,
customers.csv, transactions_train.csv, images/0XX/0XXXXXXXXX.jpg, one article without a
photo), generated here, becomes a world with photos, extra user columns, buys and sampled
CTR impressions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hm_data import CUSTOMERS, TYPES, write_hm

from moon_rec.cli import main
from moon_rec.data.id_map import IdMap
from moon_rec.data.images import decode_image
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.validation import validate_world


def test_hm_layout_becomes_a_world_with_photos(tmp_path: Path) -> None:
    root = write_hm(tmp_path / "hm")
    out = tmp_path / "w"
    assert main(["data", "import", "hm", "--path", str(root), "--out", str(out),
                 "--image-size", "16", "--negatives", "2"]) == 0
    validate_world(out)
    items = read_table(out, "items")
    assert items.num_rows == 12
    imap = IdMap.load(out, "item")  # article ids as written -> dense ids from 0
    assert items.column("item_id").to_pylist() == list(range(12))
    assert imap.get("0108775015") == 0
    rows = {r["item_id"]: r for r in items.to_pylist()}
    by_id = {int(imap.keys_of(np.array([k]))[0] or -1): r for k, r in rows.items()}
    no_photo = by_id[999999001]
    assert no_photo["image"] is None
    first = by_id[108775015]
    assert decode_image(first["image"]).shape == (16, 16, 3)  # 12 x 16 padded, resized
    assert first["spu_id"] == by_id[108776015]["spu_id"] != by_id[108777015]["spu_id"]
    assert first["colour"] == "Black" and first["department"] == "Jersey Basic"
    assert "colour: Black" in first["attributes"]
    assert 'description: Soft white trousers, with a "fit" note' in by_id[108776015]["attributes"]
    cats = read_table(out, "categories")
    assert sorted(cats.column("name").to_pylist()) == sorted(TYPES)
    users = read_table(out, "users")
    assert users.num_rows == 4
    assert users.schema.field("age").type == pa.int64()
    assert users.schema.field("fn").type == pa.bool_()
    umap = IdMap.load(out, "user")
    u0 = umap.get(CUSTOMERS[0][0])
    row = {r["user_id"]: r for r in users.to_pylist()}[u0]
    assert row["age"] == 49 and row["fn"] is True and row["club_member_status"] == "ACTIVE"
    assert {r["user_id"]: r for r in users.to_pylist()}[umap.get(CUSTOMERS[2][0])]["age"] is None
    beh = read_table(out, "behaviors")
    assert set(beh.column("action").to_pylist()) == {"buy"}
    n_tx = len((root / "transactions_train.csv").read_text().splitlines()) - 1
    assert beh.num_rows == n_tx
    imps = read_table(out, "impressions")
    assert sum(imps.column("clicked").to_pylist()) == n_tx
    meta = read_world_meta(out)
    # on the first days few articles are live: those requests show fewer negatives
    assert imps.num_rows == 3 * n_tx - meta["negatives"]["n_short"] > 2 * n_tx
    assert meta["source"] == "hm" and meta["negatives"]["k"] == 2 and not meta["text_only"]
    assert meta["n_cold_items"] >= 1  # articles first bought after the split


def test_hm_photo_outside_the_folder_and_bad_age(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = write_hm(tmp_path / "hm")
    text = (root / "customers.csv").read_text().replace(",49,", ",forty,")
    (root / "customers.csv").write_text(text)
    out = tmp_path / "w"
    assert main(["data", "import", "hm", "--path", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root / 'customers.csv'}: column 'age': row 2: ")
    assert not out.exists()
