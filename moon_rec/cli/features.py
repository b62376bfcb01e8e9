"""``moon features ...`` and ``moon embed``: the representation center's commands.

moon features build --world W --out DIR            # behaviour sequences, item features
moon features init --data DIR [--embeddings E]     # record paths for feature_repo/
moon features apply [--profile embedded|production] [--features full ...]
moon features materialize [--batch-rows N]         # chunked embeddings + Feast for the rest
moon features publish --data DIR --serving-repo R  # init + apply + materialize + repo folder
moon features training-set --world W --out T [--features full]  # point-in-time training set
moon embed --world W --checkpoint C --out E        # batch embedding job
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from moon_rec.command import handled_by
from moon_rec.featurestore.commands import Embed, FeaturesBuild, FeaturesPublish, TrainingSetBuild
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN


def _add_store_args(p: argparse.ArgumentParser) -> None:
    from moon_rec.featurestore.repo import DEFAULT_STATE_DIR

    p.add_argument(
        "--profile",
        default="embedded",
        help="embedded (DuckDB + SQLite + file registry) or production (Redis + PostgreSQL "
        "registry), or a YAML path (default: embedded)",
    )
    p.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="folder of the local registry / SQLite database and paths.json "
        f"(default: {DEFAULT_STATE_DIR}, shared with feature_repo/)",
    )


def _add_summary_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", type=Path, default=None,
                   help="also write the printed JSON summary to this file")


def _open(args: argparse.Namespace, apply: bool = True):  # type: ignore[no-untyped-def]
    from moon_rec.featurestore.repo import resolve_data_paths
    from moon_rec.featurestore.store import open_store

    return open_store(args.profile, args.state, resolve_data_paths(args.state), apply=apply)


def _cmd_init(args: argparse.Namespace) -> int:
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import write_data_paths

    if not args.data.is_dir():
        raise FileNotFoundError(f"feature data folder not found: {args.data}")
    paths = FeatureDataPaths.from_dir(args.data, args.embeddings)
    written = write_data_paths(paths, args.state)
    print(f"wrote {written}")
    print(paths.to_json())
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    mfs = _open(args, apply=False)
    mfs.apply(args.features)
    views = [v.name for v in mfs.store.list_feature_views()]
    services = [s.name for s in mfs.store.list_feature_services()]
    print(json.dumps({"project": mfs.config.project, "feature_views": views,
                      "feature_services": services}))
    return 0


def _cmd_materialize(args: argparse.Namespace) -> int:
    from moon_rec.featurestore.materialize import materialize_all

    mfs = _open(args)
    # Feast prints its progress on stdout; keep stdout the JSON report (pipe it to jq).
    with contextlib.redirect_stdout(sys.stderr):
        reports = materialize_all(mfs, batch_rows=args.batch_rows,
                                  embeddings=not args.skip_embeddings,
                                  views=not args.embeddings_only)
    print(json.dumps(reports, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``moon features ...`` and ``moon embed``."""
    feats = subparsers.add_parser(
        "features", help="the Feast feature store: tables, apply, materialize, training sets"
    )
    fsub = feats.add_subparsers(dest="features_command", metavar="SUBCOMMAND")
    fsub.required = True

    p = fsub.add_parser("build", help="build behaviour-sequence and item feature tables")
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="feature data folder")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="max sequence length L")
    _add_summary_arg(p)
    p.set_defaults(**handled_by(FeaturesBuild))

    p = fsub.add_parser("init", help="record absolute data paths for feature_repo/")
    p.add_argument("--data", type=Path, required=True, help="feature data folder (from build)")
    p.add_argument("--embeddings", type=Path, default=None, help="embedding parts (moon embed)")
    _add_store_args(p)
    p.set_defaults(func=_cmd_init)

    p = fsub.add_parser("apply", help="register the feature definitions (feast apply)")
    _add_store_args(p)
    p.add_argument("--features", nargs="+", default=None, metavar="SPEC",
                   help="feature specs to serve as FeatureServices (configs/features/<name>"
                   ".yaml or YAML files); each must fit the store, else an error names the "
                   "feature (default: every spec that fits)")
    p.set_defaults(func=_cmd_apply)

    p = fsub.add_parser("materialize", help="load the online store from the offline tables")
    _add_store_args(p)
    p.add_argument("--batch-rows", type=int, default=10_000, help="rows per online write")
    p.add_argument("--embeddings-only", action="store_true")
    p.add_argument("--skip-embeddings", action="store_true")
    p.set_defaults(func=_cmd_materialize)

    p = fsub.add_parser(
        "publish", help="init + apply + materialize, and write the serving repository folder",
        description="What the loop's feature-store step runs: record the data paths, register "
        "the definitions, materialize the online store (chunked embeddings, Feast for the "
        "rest) and write a self-contained Feast repository folder over the store (moon serve "
        "--repo).")
    p.add_argument("--data", type=Path, required=True, help="feature data folder (from build)")
    p.add_argument("--embeddings", type=Path, default=None, help="embedding parts (moon embed)")
    _add_store_args(p)
    p.add_argument("--project", default=None, help="the Feast project (default: the profile's)")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN,
                   help="the behaviour view's sequence length L")
    p.add_argument("--serving-repo", type=Path, required=True,
                   help="where to write the repository folder")
    _add_summary_arg(p)
    p.set_defaults(**handled_by(FeaturesPublish))

    p = fsub.add_parser("training-set", help="point-in-time ranker training set")
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output parquet")
    p.add_argument("--data", type=Path, default=None, help="feature tables (default: built now)")
    p.add_argument("--profile", default="embedded")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN)
    p.add_argument("--features", default="ids",
                   help="feature spec (configs/features/<name>.yaml or a YAML file): its extra "
                   "features become columns (default: ids, the base columns only)")
    _add_summary_arg(p)
    p.set_defaults(**handled_by(TrainingSetBuild))

    p = subparsers.add_parser("embed", help="batch-embed the catalog with a MOON encoder")
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True, help="MoonEncoder.save_pretrained dir")
    p.add_argument("--out", type=Path, required=True, help="embedding parts folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--part-rows", type=int, default=4096, help="items per parquet part")
    p.add_argument("--device", default=None, help="torch device for the encoder (e.g. cuda)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16 autocast where native (auto, default), or force fp32 / bf16",
    )
    p.add_argument("--no-progress", action="store_true")
    _add_summary_arg(p)
    p.set_defaults(**handled_by(Embed))
