"""Test data of the H&M path (never the real files): a folder in the exact H&M layout
(articles.csv, customers.csv, transactions_train.csv, images/0XX/0XXXXXXXXX.jpg) with tiny
JPEGs and one article without a photo; larger with ``scale`` for the demo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

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


def write_hm(root: Path, *, scale: int = 1, photo_missing: bool = True) -> Path:
    """The fixture: 12 articles, 4 customers, ~120 transactions (baskets of 1 to 3) over 28 days (new articles
    only in the last days: cold after an 0.8 split); ``scale`` > 1 adds customers
    (``scale`` x 4, hex ids) and transactions (about ``scale`` x 120); ``photo_missing``
    False gives the last article a photo too."""
    root.mkdir(parents=True, exist_ok=True)
    customers = CUSTOMERS + [
        (f"{k:064x}", "", "1.0", "ACTIVE", "NONE", str(20 + k % 50), f"{k * 7:064x}")
        for k in range(1, 4 * (scale - 1) + 1)]
    rows = [ARTICLE_HEADER]
    for i, (aid, code) in enumerate(ARTICLES):
        t, c = TYPES[i % 3], COLOURS[i % 4]
        desc = f'"Soft {c.lower()} {t.lower()}, with a ""fit"" note"' if i % 2 else ""
        rows.append(f"{aid},{code},{c} {t} {i},{253 + i % 3},{t},Garment Upper body,1010016,"
                    f"Solid,9,{c},4,Dark,5,{c},1676,Jersey Basic,A,Ladieswear,1,Ladieswear,16,"
                    f"Womens Everyday Basics,1002,Jersey Basic,{desc}")
    (root / "articles.csv").write_text("\n".join(rows) + "\n")
    rows = ["customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"]
    rows += [",".join(c) for c in customers]
    (root / "customers.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    rows = ["t_dat,customer_id,article_id,price,sales_channel_id"]
    for d in range(1, 29):
        for c in customers[: len(customers) - 1 + d % 2]:
            if rng.random() < 0.6:  # a basket of 1 to 3 articles that day
                for _ in range(1 + int(rng.integers(0, 3))):
                    aid = ARTICLES[int(rng.integers(0, 8 if d < 24 else 12))][0]
                    rows.append(f"2018-09-{d:02d},{c[0]},{aid},0.0{int(rng.integers(10, 99))},2")
    (root / "transactions_train.csv").write_text("\n".join(rows) + "\n")
    for i, (aid, _) in enumerate(ARTICLES[:-1] if photo_missing else ARTICLES):
        folder = root / "images" / aid[:3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{aid}.jpg").write_bytes(_jpeg((20 * i, 100, 200 - 10 * i)))
    return root
