"""``moon data import recbole``: RecBole's atomic files, the exchange format in which
RecBole distributes dozens of public datasets, as one adapter over the logs import
(``moon_rec.data.logs``: this module only writes the mapping).

The files (``DIR/NAME.inter``, optional ``NAME.item`` and ``NAME.user``; or the same
inside ``DIR/NAME/``) are tab-separated, without quoting, with a header of ``field:type``
names; the types are ``token`` (an id or a label), ``token_seq`` (space-separated tokens),
``float`` and ``float_seq``. Any other type is an error naming the header field.

What becomes what:
    .inter   user_id, item_id, timestamp (unix seconds; required: the split is by time),
             rating. ``--click-threshold T`` (default 4): every row an impression of its own
             request, clicked = rating >= T, the clicked ones behaviours (MovieLens's
             construction); ``--implicit``: every row a positive (a behaviour), and
             ``--negatives K`` draws the CTR impressions (``moon_rec.data.negatives``).
    .item    item_id; title = ``--title-field`` (default: the first token_seq field), as
             text; category = the first token of ``--category-field`` (default: a field
             named class, genre, genres, categories or category); every other field goes
             into the attribute text ("release_year: 1995; ...") and, when it is a
             ``token`` or ``float`` field, into an extra typed column (string / float64).
             No .item file: the items are the ids of .inter, titled by their token.
    .user    user_id; the other token / float fields are extra typed columns of users.
Ids are tokens: ``--ids map`` (default) gives them stable int64 ids (kept in
``WORLD/id_maps/``); ``--ids keep`` keeps integer tokens as they are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moon_rec.data.errors import DataError
from moon_rec.data.logs import (
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
from moon_rec.data.schemas import TABLES

TYPES: tuple[str, ...] = ("token", "token_seq", "float", "float_seq")
CATEGORY_FIELDS: tuple[str, ...] = ("class", "genre", "genres", "categories", "category")


def read_header(path: Path) -> list[tuple[str, str, str]]:
    """[(header field, name, type)] of an atomic file.

    Raises:
        DataError: the file is missing or empty, a field is not ``name:type``, or a type is
            not one of RecBole's.
    """
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    with path.open(encoding="utf-8-sig", newline="") as fh:
        line = fh.readline(1 << 20).rstrip("\r\n")
    if not line.strip():
        raise DataError("empty file (expected a header of field:type names)", file=str(path),
                        row=1)
    out = []
    for field in line.split("\t"):
        name, sep, type_ = field.strip().rpartition(":")
        if not sep or not name:
            raise DataError("header field without a type (expected name:type)", file=str(path),
                            column=field, row=1)
        if type_ not in TYPES:
            raise DataError(f"unknown type {type_!r} (RecBole types: {', '.join(TYPES)})",
                            file=str(path), column=field, row=1)
        out.append((field.strip(), name, type_))
    return out


def _find(path: Path, dataset: str) -> dict[str, Path]:
    for folder in (path, path / dataset):
        inter = folder / f"{dataset}.inter"
        if inter.is_file():
            return {k: folder / f"{dataset}.{k}" for k in ("inter", "item", "user")
                    if (folder / f"{dataset}.{k}").is_file()}
    raise DataError(f"no {dataset}.inter here (RecBole atomic files: NAME.inter, NAME.item, "
                    "NAME.user)", file=str(path))


def _field(header: list[tuple[str, str, str]], name: str, path: Path) -> str:
    """The header field (``name:type``) of field ``name``."""
    for field, n, _ in header:
        if n == name:
            return field
    raise DataError(f"missing field {name!r} (the header has: "
                    f"{', '.join(f for f, _, _ in header)})", file=str(path), column=name, row=1)


def _extra_name(name: str, table: str) -> str:
    """A RecBole field name as an extra column name (lower case, ``_``; no clash)."""
    clean = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_") or "field"
    if not clean[0].isalpha():
        clean = f"f_{clean}"
    contract = {c.name for c in TABLES[table].columns}
    if clean in contract or clean.startswith("oracle_"):
        clean = f"src_{clean}"
    return clean[:63]


def recbole_mapping(
    path: str | Path,
    dataset: str,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    rating_field: str = "rating",
    click_threshold: float | None = 4.0,
    negatives: NegativeSampling | None = None,
    title_field: str | None = None,
    category_field: str | None = None,
    ids: str = "map",
    split_quantile: float = 0.8,
) -> LogsMapping:
    """The logs mapping of a RecBole dataset (``click_threshold`` None: implicit)."""
    files = _find(Path(path), dataset)
    inter = files["inter"]
    h = read_header(inter)
    columns = {"user_id": _field(h, user_field, inter), "item_id": _field(h, item_field, inter),
               "ts": _field(h, time_field, inter)}
    label: dict[str, Any] = {}
    if click_threshold is not None:
        if negatives is not None:
            raise DataError("negative sampling asked of a log that already has impressions "
                            "(ratings thresholded to clicks): pass --implicit",
                            file=str(inter), column=rating_field)
        columns["label"] = _field(h, rating_field, inter)
        label = {"label_threshold": click_threshold}
    mapping: dict[str, Any] = {
        "source": f"recbole:{dataset}",
        "time": TimeFormat(format="unix_s"),
        "ids": {"user": ids, "item": ids},
        "interactions": InteractionsSource(path=inter, format="tsv", columns=columns,
                                           action="click", **label),
        "negatives": negatives,
        "split": Split(quantile=split_quantile),
    }
    if "item" in files:
        mapping["items"] = _items(files["item"], item_field, title_field, category_field)
    else:
        mapping["items_from_logs"] = True
    if "user" in files:
        f = files["user"]
        hu = read_header(f)
        uid = _field(hu, user_field, f)
        extra: dict[str, ExtraType | ExtraColumn] = {
            _extra_name(n, "users"): ExtraColumn(column=field, type=_extra_type(t))
            for field, n, t in hu if field != uid and t in ("token", "float")}
        mapping["users"] = UsersSource(path=f, format="tsv", columns={"user_id": uid},
                                       extra=extra)
    return LogsMapping(**mapping)


def _extra_type(t: str) -> ExtraType:
    return "float64" if t == "float" else "string"


def _items(f: Path, item_field: str, title_field: str | None,
           category_field: str | None) -> ItemsSource:
    h = read_header(f)
    iid = _field(h, item_field, f)
    if title_field is not None:
        title = _field(h, title_field, f)
    else:
        seqs = [field for field, _, t in h if t == "token_seq" and field != iid]
        title = seqs[0] if seqs else iid
    category: str | None
    if category_field is not None:
        category = _field(h, category_field, f)
    else:
        category = next((field for field, n, _ in h if n.lower() in CATEGORY_FIELDS), None)
    columns = {"item_id": iid, "title": title}
    if category is not None:
        columns["category"] = category
    rest = [(field, n, t) for field, n, t in h if field not in (iid, title)]
    extra: dict[str, ExtraType | ExtraColumn] = {
        _extra_name(n, "items"): ExtraColumn(column=field, type=_extra_type(t))
        for field, n, t in rest if t in ("token", "float") and field != category}
    return ItemsSource(path=f, format="tsv", columns=columns,
                       attributes={n: field for field, n, _ in rest}, category_sep=" ",
                       extra=extra)


def run_cli(args: Any) -> int:
    """``moon data import recbole --path DIR --dataset NAME --out W``: prints world.json."""
    import json

    negatives = None
    if args.negatives:
        negatives = NegativeSampling(k=args.negatives, strategy=args.negative_strategy,
                                     seed=args.seed)
    mapping = recbole_mapping(
        args.path, args.dataset, click_threshold=None if args.implicit else args.click_threshold,
        negatives=negatives, title_field=args.title_field, category_field=args.category_field,
        ids=args.ids, split_quantile=args.split_quantile, user_field=args.user_field,
        item_field=args.item_field, time_field=args.time_field, rating_field=args.rating_field,
    )
    meta = import_logs(mapping, args.out, overwrite=args.overwrite)
    print(json.dumps(meta, indent=2))
    return 0
