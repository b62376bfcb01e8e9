"""``moon data import hm``: the H&M Personalized Fashion Recommendations layout, as one
adapter over the logs import (``moon_rec.data.logs``: this module writes the mapping and
derives each article's photo name).

    DIR/articles.csv            article_id, product_code, prod_name, product_type_name,
                                product_group_name, graphical_appearance_name,
                                colour_group_name, perceived_colour_master_name,
                                department_name, index_name, section_name,
                                garment_group_name, detail_desc, ...
    DIR/customers.csv           customer_id (a hex string), FN, Active, club_member_status,
                                fashion_news_frequency, age, postal_code
    DIR/transactions_train.csv  t_dat (a date), customer_id, article_id, price,
                                sales_channel_id
    DIR/images/0XX/0XXXXXXXXX.jpg   the photo of an article: the first 3 digits of its
                                10-digit zero-padded id, then that id

What becomes what:
    items        item_id = a stable dense int64 id of article_id (the key, as written, in
                 ``WORLD/id_maps/item.parquet``: the rankers size their id tables by the
                 largest id, and article ids are ~10^8); title = prod_name; category =
                 product_type_name; spu_id = a stable id of product_code (the variants of
                 one product); attributes = the group / colour / department /
                 section names and detail_desc as text; the names also as extra string
                 columns; image = the photo through ``prepare_image``, null when there is
                 none (a text-only item); launch = the first purchase.
    users        user_id = a stable int64 id of customer_id (``WORLD/id_maps/user.parquet``);
                 extra columns fn, active (bool), club_member_status,
                 fashion_news_frequency, postal_code (string), age (int64).
    behaviors    every transaction a ``buy`` (t_dat is a date: midnight UTC).
    impressions  transactions are positives only: each one a request with ``--negatives``
                 K sampled negatives (default 4, uniform among live items; see
                 ``moon_rec.data.negatives``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from moon_rec.data.errors import DataError
from moon_rec.data.logs import (
    Batch,
    ExtraColumn,
    ExtraType,
    InteractionsSource,
    ItemsSource,
    LogsMapping,
    Split,
    TimeFormat,
    UsersSource,
    import_logs,
)
from moon_rec.data.negatives import NegativeSampling

FILES = {"items": "articles.csv", "users": "customers.csv",
         "interactions": "transactions_train.csv"}
ATTRIBUTES: dict[str, str] = {
    "product_group": "product_group_name",
    "appearance": "graphical_appearance_name",
    "colour": "colour_group_name",
    "perceived_colour": "perceived_colour_master_name",
    "department": "department_name",
    "index": "index_name",
    "section": "section_name",
    "garment_group": "garment_group_name",
}
CUSTOMER_EXTRAS: dict[str, tuple[str, ExtraType]] = {
    "fn": ("FN", "bool"),
    "active": ("Active", "bool"),
    "club_member_status": ("club_member_status", "string"),
    "fashion_news_frequency": ("fashion_news_frequency", "string"),
    "age": ("age", "int64"),
    "postal_code": ("postal_code", "string"),
}


def photo_name(article_id: str) -> str:
    """``images/``-relative name of an article's photo: ``010/0108775015.jpg``."""
    aid = article_id.strip().zfill(10)
    return f"{aid[:3]}/{aid}.jpg"


def _with_photo(b: Batch) -> Batch:
    """The articles batch with an ``image`` column: each article's photo name."""
    ids = b.cols["item_id"]
    names = [None if v is None or not str(v).strip().isdigit() else photo_name(str(v))
             for v in pc.utf8_trim_whitespace(ids.cast(pa.string())).to_pylist()]
    return Batch(b.file, {**b.cols, "image": pa.array(names, pa.string())}, b.start, b.lines)


def hm_mapping(path: str | Path, *, negatives: NegativeSampling | None = None,
               split_quantile: float = 0.8, image_size: int = 64) -> LogsMapping:
    """The logs mapping of an H&M folder."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("H&M folder not found", file=str(root))
    for f in FILES.values():
        if not (root / f).is_file():
            raise DataError(f"missing {f} (the H&M layout: {', '.join(FILES.values())}, "
                            "images/0XX/)", file=str(root / f))
    return LogsMapping(
        source="hm",
        time=TimeFormat(format="iso8601", timezone="UTC"),
        # dense ids: the rankers size their id tables by the largest id, and article ids
        # are ~10^8 (the article id stays the key of WORLD/id_maps/item.parquet)
        ids={"user": "map", "item": "map", "spu": "map"},
        images=root / "images",
        image_size=image_size,
        items=ItemsSource(
            path=root / FILES["items"], format="csv",
            columns={"item_id": "article_id", "title": "prod_name",
                     "category": "product_type_name", "spu_id": "product_code"},
            attributes={**ATTRIBUTES, "description": "detail_desc"},
            extra={k: ExtraColumn(column=v, type="string") for k, v in ATTRIBUTES.items()},
            missing_image="null",
        ),
        users=UsersSource(
            path=root / FILES["users"], format="csv", columns={"user_id": "customer_id"},
            extra={k: ExtraColumn(column=c, type=t) for k, (c, t) in CUSTOMER_EXTRAS.items()},
        ),
        interactions=InteractionsSource(
            path=root / FILES["interactions"], format="csv",
            columns={"user_id": "customer_id", "item_id": "article_id", "ts": "t_dat"},
            action="buy",
        ),
        negatives=negatives if negatives is not None else NegativeSampling(k=4),
        split=Split(quantile=split_quantile),
    )


def import_hm(path: str | Path, out: str | Path, *, negatives: NegativeSampling | None = None,
              split_quantile: float = 0.8, image_size: int = 64,
              overwrite: bool = False) -> dict[str, Any]:
    """``moon data import hm``: an H&M folder into world ``out`` (returns world.json)."""
    mapping = hm_mapping(path, negatives=negatives, split_quantile=split_quantile,
                         image_size=image_size)
    return import_logs(mapping, out, overwrite=overwrite, hooks={"items": _with_photo})


def run_cli(args: Any) -> int:
    import json

    negatives = NegativeSampling(k=args.negatives or 4, strategy=args.negative_strategy,
                                 seed=args.seed)
    meta = import_hm(args.path, args.out, negatives=negatives,
                     split_quantile=args.split_quantile, image_size=args.image_size,
                     overwrite=args.overwrite)
    print(json.dumps(meta, indent=2))
    return 0
