"""``moon ranker train|eval|compare``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moon_rec.command import handled_by
from moon_rec.ranking.commands import DEFAULT_CONFIG, EmbedQueries, RankerCompare, StyleEmbeddings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ranker", help="TorchRec CTR ranker: train, evaluate, compare")
    sub = parser.add_subparsers(dest="ranker_command", metavar="ACTION")
    sub.required = True

    train = sub.add_parser("train", help="train a ranker (one process or under torchrun)")
    train.add_argument("--training-set", required=True, help="training-set parquet (file or dir)")
    train.add_argument(
        "--embeddings", help="MOON embedding parquet (file or dir); needed for ids+moon"
    )
    train.add_argument("--query-embeddings", help="query-text embedding parquet (optional)")
    train.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML experiment file")
    train.add_argument("--experiment", help="experiment id in the YAML file (e.g. cube_moon)")
    train.add_argument("--out", required=True, help="model directory")
    train.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (checkpointed)")
    train.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a ranker on the test period")
    ev.add_argument("--model", required=True, help="model directory")
    ev.add_argument("--training-set", help="override the training set recorded in the model")
    ev.add_argument("--embeddings", help="override the embeddings recorded in the model")
    ev.add_argument(
        "--query-embeddings", help="override the query embeddings recorded in the model"
    )
    ev.add_argument("--world", help="world directory (oracle_p_click for oracle_auc)")
    ev.add_argument("--json", action="store_true", help="print JSON only")
    ev.set_defaults(func=_eval)

    cmp = sub.add_parser("compare", help="ID-only DIN vs MOON rankers, with gap closed")
    cmp.add_argument("--training-set", type=Path, required=True)
    cmp.add_argument("--embeddings", type=Path, required=True)
    cmp.add_argument("--query-embeddings", type=Path,
                     help="query-text embedding parquet (optional)")
    cmp.add_argument("--world", type=Path,
                     help="world directory (oracle AUC, needed for gap closed)")
    cmp.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    cmp.add_argument(
        "--experiments",
        nargs="+",
        default=RankerCompare.model_fields["experiments"].default,
        help="experiment ids; the first is the baseline",
    )
    cmp.add_argument("--seed", type=int)
    cmp.add_argument(
        "--reuse",
        action="store_true",
        help="keep finished models in OUT/<id> trained with the same config, training set "
        "and embedding version (e.g. the ID-only baseline across encoder versions)",
    )
    cmp.add_argument(
        "--style-embeddings",
        type=Path,
        help="perfect look vectors of a synthetic world (moon ranker style-embeddings writes "
        "them): each content ranker also runs on them, for its content share",
    )
    cmp.add_argument("--out", type=Path, required=True)
    cmp.add_argument("--json", dest="as_json", action="store_true",
                     help="print JSON instead of the table")
    cmp.add_argument("--quiet", action="store_true", help="no progress bars")
    cmp.set_defaults(**handled_by(RankerCompare))

    sty = sub.add_parser(
        "style-embeddings",
        help="a synthetic world's perfect look vectors, for compare --style-embeddings",
        description="Write OUT/items.parquet: per item the world's hidden oracle_style (plus "
        "noise) in the embedding-table format, so that each content ranker also runs on "
        "perfect look vectors (its content share). Only a synthetic world has them.")
    sty.add_argument("--world", type=Path, required=True)
    sty.add_argument("--out", type=Path, required=True, help="output folder")
    sty.add_argument("--noise", type=float, default=0.05,
                     help="Gaussian noise on the dims past the style")
    sty.add_argument("--style-noise", type=float, default=0.0,
                     help="blur the style itself (content quality)")
    sty.set_defaults(**handled_by(StyleEmbeddings))

    q = sub.add_parser("embed-queries", help="encode a training set's query texts (CUBE's s_q)")
    q.add_argument("--training-set", type=Path, required=True)
    q.add_argument("--checkpoint", type=Path, required=True,
                   help="MoonEncoder.save_pretrained dir")
    q.add_argument("--out", type=Path, required=True, help="output parquet file")
    q.add_argument("--batch-size", type=int, default=256)
    q.set_defaults(**handled_by(EmbedQueries))


def _train(args: argparse.Namespace) -> int:
    from moon_rec.ranking.config import load_ranker_config
    from moon_rec.ranking.train import train_ranker

    config = load_ranker_config(args.config, args.experiment)
    meta = train_ranker(
        args.training_set,
        config,
        args.out,
        embeddings=args.embeddings,
        query_embeddings=args.query_embeddings,
        resume=not args.no_resume,
        progress=not args.quiet,
        max_steps=args.max_steps,
        device=args.device,
    )
    if _is_main():
        keys = ("steps", "total_steps", "done", "train_loss", "examples_per_s", "model_version")
        print(json.dumps({k: meta.get(k) for k in keys}))
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _eval(args: argparse.Namespace) -> int:
    from moon_rec.ranking.evaluate import evaluate_ranker

    report = evaluate_ranker(
        args.model,
        training_set=args.training_set,
        embeddings=args.embeddings,
        query_embeddings=args.query_embeddings,
        world=args.world,
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for key, value in sorted(report.items()):
            print(f"{key:24s} {value}")
    (Path(args.model) / "eval.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0
