"""`moon data import hm`: a dozen-row fixture in the exact H&M layout (articles.csv,
customers.csv, transactions_train.csv, images/0XX/0XXXXXXXXX.jpg, one article without a
photo), generated here, becomes a world with photos, extra user columns, buys and sampled
CTR impressions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from moon_rec.cli import main
from moon_rec.data.id_map import IdMap
from moon_rec.data.images import decode_image
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.validation import validate_world

ARTICLE_HEADER = ("article_id,product_code,prod_name,product_type_no,product_type_name,"
                  "product_group_name,graphical_appearance_no,graphical_appearance_name,"
                  "colour_group_code,colour_group_name,perceived_colour_value_id,"
                  "perceived_colour_value_name,perceived_colour_master_id,"
                  "perceived_colour_master_name,department_no,department_name,index_code,"
                  "index_name,index_group_no,index_group_name,section_no,section_name,"
                  "garment_group_no,garment_group_name,detail_desc")
TYPES = ["Vest top", "Trousers", "Sweater"]
COLOURS = ["Black", "White", "Red", "Blue"]
# 12 articles: (article_id as written, product_code); the last has no photo
ARTICLES = [(f"0{108775015 + 1000 * i}", f"0{108775 + i // 2}") for i in range(11)] + [
    ("0999999001", "0999999")]
CUSTOMERS = [
    ("00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657", "1.0", "1.0",
     "ACTIVE", "Regularly", "49", "52043ee2162cf5aa7ee79974281641c6f11a68d276429a91f8ca0d4b6efa8100"),
    ("0000423b00ade91418cceaf3b26c6af3dd342b51fd051eec9c12fb36984420fa", "", "", "ACTIVE",
     "NONE", "25", "2973abc54daa8a5f8ccfe9362140c63247c5eee03f1d93f4c830291c32bc3057"),
    ("000058a12d5b43e67d225668fa1f8d618c13dc232df0cad8ffe7ad4a1091e318", "", "", "ACTIVE",
     "NONE", "", "2c29ae653a9282cce4151bd87643c907644e09541abc28ae87dea0d1f6603b1c"),
    ("00005ca1c9ed5f5146b52ac8639a40ca9d57aeff4d1bd2c5feb1ca5dff07c43e", "1.0", "1.0",
     "PRE-CREATE", "Monthly", "54", "5d36574f52495e81f019b680c843c443bd343d5ca5b1c222539af5973a23ae6d"),
]


def _jpeg(colour: tuple[int, int, int], w: int = 12, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="JPEG")
    return buf.getvalue()


def write_hm(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [ARTICLE_HEADER]
    for i, (aid, code) in enumerate(ARTICLES):
        t, c = TYPES[i % 3], COLOURS[i % 4]
        desc = f'"Soft {c.lower()} {t.lower()}, with a ""fit"" note"' if i % 2 else ""
        rows.append(f"{aid},{code},{c} {t} {i},{253 + i % 3},{t},Garment Upper body,1010016,"
                    f"Solid,9,{c},4,Dark,5,{c},1676,Jersey Basic,A,Ladieswear,1,Ladieswear,16,"
                    f"Womens Everyday Basics,1002,Jersey Basic,{desc}")
    (root / "articles.csv").write_text("\n".join(rows) + "\n")
    rows = ["customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"]
    rows += [",".join(c) for c in CUSTOMERS]
    (root / "customers.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    rows = ["t_dat,customer_id,article_id,price,sales_channel_id"]
    for d in range(1, 29):
        for c in CUSTOMERS[: 3 + d % 2]:
            if rng.random() < 0.6:
                aid = ARTICLES[int(rng.integers(0, 8 if d < 24 else 12))][0]
                rows.append(f"2018-09-{d:02d},{c[0]},{aid},0.0{int(rng.integers(10, 99))},2")
    (root / "transactions_train.csv").write_text("\n".join(rows) + "\n")
    for i, (aid, _) in enumerate(ARTICLES[:-1]):
        folder = root / "images" / aid[:3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{aid}.jpg").write_bytes(_jpeg((20 * i, 100, 200 - 10 * i)))
    return root


def test_hm_layout_becomes_a_world_with_photos(tmp_path: Path) -> None:
    root = write_hm(tmp_path / "hm")
    out = tmp_path / "w"
    assert main(["data", "import", "hm", "--path", str(root), "--out", str(out),
                 "--image-size", "16", "--negatives", "2"]) == 0
    validate_world(out)
    items = read_table(out, "items")
    assert items.num_rows == 12
    assert items.column("item_id").to_pylist()[0] == 108775015  # leading zero dropped
    by_id = {r["item_id"]: r for r in items.to_pylist()}
    no_photo = by_id[999999001]
    assert no_photo["image"] is None
    first = by_id[108775015]
    assert decode_image(first["image"]).shape == (16, 16, 3)  # 12 x 16 padded, resized
    assert first["spu_id"] == 108775 and by_id[108776015]["spu_id"] == 108775
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
