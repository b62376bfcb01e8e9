"""`moon world ...` and `moon data import`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moon_rec.command import handled_by
from moon_rec.data.commands import (
    MovieLensImport,
    WorldCopy,
    WorldGenerate,
    WorldShow,
    WorldValidate,
    world_summary,
)
from moon_rec.data.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="generate, validate and look at a synthetic world")
    wsub = world.add_subparsers(dest="world_command", metavar="COMMAND")
    wsub.required = True

    gen = wsub.add_parser(
        "generate",
        help="generate a seeded synthetic e-commerce world (parquet + world.json)",
        description="Generate a synthetic world. Same preset, seed and overrides give the "
        "same content. A killed run resumes from its finished parts.",
    )
    gen.add_argument("--preset", default="small", help="tiny | small | default | large")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, type=Path, help="output directory")
    gen.add_argument("--n-items", type=int, help="override the number of catalog items")
    gen.add_argument("--n-users", type=int, help="override the number of users")
    gen.add_argument("--n-requests", type=int, help="override the number of search requests")
    gen.add_argument("--n-brands", type=int, help="override the number of brands")
    gen.add_argument("--days", type=int, help="override the length of the traffic period")
    gen.add_argument("--image-size", type=int, help="image side in pixels (default 64)")
    gen.add_argument("--workers", type=int, help="image rendering processes")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing world")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")
    gen.set_defaults(**handled_by(WorldGenerate))

    val = wsub.add_parser(
        "validate",
        help="check every table and world.json against the data contracts (DESIGN section 3)",
        description="Validate a world directory: world.json (a JSON object with "
        "train_end_ts, an ISO-8601 time with a zone), and per table columns, types, nulls, "
        "ranges, images, unique ids and references. Exits 2 naming file, column and row on "
        "the first problem.",
    )
    val.add_argument("world", type=Path)
    val.add_argument("--fast", action="store_true", help="check image signatures only")
    val.add_argument("--json", dest="as_json", action="store_true",
                     help="print the report as JSON")
    val.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    val.set_defaults(**handled_by(WorldValidate))

    copy = wsub.add_parser(
        "copy", help="validate a world and copy it (tables, id maps, world.json) into --out",
        description="The first step of `make demo WORLD_DIR=W`: a world imported before "
        "(moon data import logs | recbole | hm) becomes the demo's world.")
    copy.add_argument("world", type=Path)
    copy.add_argument("--out", required=True, type=Path, help="the destination (replaced)")
    copy.set_defaults(**handled_by(WorldCopy))

    show = wsub.add_parser("show", help="write a contact sheet: catalog photos beside image queries")
    show.add_argument("world", type=Path)
    show.add_argument("--n", type=int, default=16, help="number of items (rows)")
    show.add_argument("--out", type=Path, default=Path("sheet.png"))
    show.set_defaults(**handled_by(WorldShow))

    summ = wsub.add_parser("summary", help="print world.json without the config block")
    summ.add_argument("world", type=Path)
    summ.set_defaults(func=_summary)

    data = sub.add_parser("data", help="bring real data in")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    dsub.required = True
    imp = dsub.add_parser(
        "import",
        help="turn your own catalog (CSV/JSONL + image folder) into a validated items table",
        description="Columns: item_id, title, image (file name), category (id or name); "
        "optional attributes, brand, price, launch_ts (ISO-8601 with zone), spu_id.",
    )
    # not required= here: `moon data import movielens ...` leaves them out (checked in _import)
    imp.add_argument("--items", type=Path, help="catalog.csv or catalog.jsonl (required)")
    imp.add_argument("--images", type=Path, help="folder of the image files (required)")
    imp.add_argument("--out", type=Path, help="output world directory (required)")
    imp.add_argument("--image-size", type=int, default=64, help="resize to N x N (0: keep)")
    imp.add_argument(
        "--look-driven", default="", help="comma-separated category names that are look-driven"
    )
    imp.add_argument("--max-title-chars", type=int, default=1_000,
                     help="longest title accepted (default 1000 characters)")
    imp.add_argument("--max-attributes-chars", type=int, default=10_000,
                     help="longest attribute text accepted (default 10000 characters)")
    imp.add_argument("--max-image-pixels", type=int, default=25_000_000,
                     help="largest image accepted, width x height (default 25000000)")
    imp.set_defaults(func=_import)
    isub = imp.add_subparsers(dest="import_source", metavar="SOURCE")
    ml = isub.add_parser(
        "movielens",
        help="MovieLens-100k (GroupLens ml-100k folder or the widedeep parquet files) -> a "
        "text-only world",
        description="Writes items (title, year and genres as text, no image), users, "
        "behaviours (ratings >= 4), impressions (every rating; clicked = rating >= 4), "
        "categories (genres) and world.json with a time split. Get the files with "
        "scripts/fetch_movielens.sh DIR.",
    )
    ml.add_argument("--path", required=True, type=Path,
                    help="folder with u.data/u.item/u.user or MovieLens100k_*.parquet.brotli")
    ml.add_argument("--out", required=True, type=Path, help="output world directory")
    ml.add_argument("--split-quantile", type=float, default=0.8,
                    help="share of the ratings (in time order) in the training period")
    ml.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ml.set_defaults(**handled_by(MovieLensImport))

    logs = isub.add_parser(
        "logs",
        help="your logs (behaviours, impressions, users, image queries; CSV / TSV / parquet / "
        "JSON lines) through a column-mapping YAML -> a validated world",
        description="The mapping names each source file and its columns (ours: theirs), the "
        "time format (unix_s, unix_ms, iso8601), the id policy (map: string ids -> stable "
        "int64 ids, kept in WORLD/id_maps/; keep), extra typed user / item columns, and "
        "negatives: {k, strategy, seed} to turn positives-only logs into CTR impressions. "
        "See moon_rec/data/logs.py. Without an items source the catalog already in --out "
        "(moon data import) is used.",
    )
    logs.add_argument("--mapping", required=True, type=Path, help="the column-mapping YAML")
    logs.add_argument("--out", required=True, type=Path, help="output world directory")
    logs.add_argument("--overwrite", action="store_true",
                      help="replace the users / behaviours / impressions already in --out")
    logs.set_defaults(func=_import_logs)

    rb = isub.add_parser(
        "recbole",
        help="RecBole atomic files (NAME.inter / .item / .user, field:type headers) -> a world",
        description="Ratings thresholded to clicks (--click-threshold, default 4: every "
        "rating an impression) or kept as implicit positives (--implicit, with --negatives K "
        "for CTR impressions). token_seq fields are item text. See moon_rec/data/recbole.py.",
    )
    rb.add_argument("--path", required=True, type=Path, help="folder of the atomic files")
    rb.add_argument("--dataset", required=True, help="NAME of NAME.inter")
    rb.add_argument("--out", required=True, type=Path, help="output world directory")
    rb.add_argument("--click-threshold", type=float, default=4.0,
                    help="clicked = rating >= this (default 4)")
    rb.add_argument("--implicit", action="store_true",
                    help="every interaction a positive (no rating threshold)")
    _negative_args(rb)
    rb.add_argument("--ids", choices=("map", "keep"), default="map",
                    help="map tokens to stable int64 ids (default) or keep integer tokens")
    rb.add_argument("--title-field", help="item title field (default: the first token_seq)")
    rb.add_argument("--category-field", help="item category field (first token)")
    rb.add_argument("--user-field", default="user_id")
    rb.add_argument("--item-field", default="item_id")
    rb.add_argument("--time-field", default="timestamp")
    rb.add_argument("--rating-field", default="rating")
    rb.add_argument("--split-quantile", type=float, default=0.8)
    rb.add_argument("--overwrite", action="store_true", help="replace a world in --out")
    rb.set_defaults(func=_import_recbole)

    hm = isub.add_parser(
        "hm",
        help="the H&M fashion layout (articles.csv, customers.csv, transactions_train.csv, "
        "images/0XX/) -> a world with photos",
        description="Articles -> items (photos through prepare_image, null where missing), "
        "customers -> users with extra columns, transactions -> buys and, with K sampled "
        "negatives each (default 4), CTR impressions. See moon_rec/data/hm.py.",
    )
    hm.add_argument("--path", required=True, type=Path, help="the H&M folder")
    hm.add_argument("--out", required=True, type=Path, help="output world directory")
    _negative_args(hm)
    hm.add_argument("--image-size", type=int, default=64, help="resize photos to N x N")
    hm.add_argument("--split-quantile", type=float, default=0.8)
    hm.add_argument("--overwrite", action="store_true", help="replace a world in --out")
    hm.set_defaults(func=_import_hm)




def _summary(args: argparse.Namespace) -> int:
    from moon_rec.data.io import read_world_meta

    print(json.dumps(world_summary(read_world_meta(args.world)), indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from moon_rec.data.importer import ImportLimits, import_catalog

    for name in ("items", "images", "out"):
        if getattr(args, name) is None:
            raise DataError(f"moon data import needs --{name} (or a SOURCE: logs, recbole, hm, "
                            "movielens)")

    look = tuple(s.strip() for s in args.look_driven.split(",") if s.strip())
    try:
        limits = ImportLimits(
            max_title_chars=args.max_title_chars,
            max_attributes_chars=args.max_attributes_chars,
            max_image_pixels=args.max_image_pixels,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    summary = import_catalog(
        args.items, args.images, args.out, image_size=args.image_size, look_driven=look,
        limits=limits,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _negative_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--negatives", type=int, default=0,
                   help="K sampled negatives per positive -> CTR impressions (0: none; "
                   "hm: 0 means the default 4)")
    p.add_argument("--negative-strategy", choices=("uniform", "popularity", "category"),
                   default="uniform")
    p.add_argument("--seed", type=int, default=0, help="the negative draw's seed")


def _import_hm(args: argparse.Namespace) -> int:
    from moon_rec.data.hm import run_cli

    return run_cli(args)


def _import_recbole(args: argparse.Namespace) -> int:
    from moon_rec.data.recbole import run_cli

    return run_cli(args)


def _import_logs(args: argparse.Namespace) -> int:
    from moon_rec.data.logs import run_cli

    return run_cli(args)

