"""`moon eval recall`: image-search recall per Matryoshka dim, text recall, category probe,
with the untrained-encoder and colour-histogram baselines computed in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _eval_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `moon eval` sub-command group, shared with other packages' `eval` commands."""
    parser = sub.choices.get("eval")
    if parser is None:
        parser = sub.add_parser("eval", help="evaluate encoders and models")
        group = parser.add_subparsers(dest="eval_command", metavar="COMMAND")
        group.required = True
        return group
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("`moon eval` exists without sub-commands")


def register(sub: argparse._SubParsersAction) -> None:
    rec = _eval_subparsers(sub).add_parser(
        "recall", help="image-search recall@1/10/100 per Matryoshka dim (+ baselines)",
        description="For every evaluation image query (ts >= train_end_ts), rank all catalog "
        "items' product embeddings by cosine (exact faiss search); also text-query "
        "recall@10 on held-out behaviours and a category linear probe. Baselines: an "
        "untrained encoder of the same architecture and a colour histogram.")
    rec.add_argument("--world", required=True, type=Path)
    rec.add_argument("--checkpoint", required=True, type=Path,
                     help="a run directory (with encoder/) or an encoder checkpoint")
    rec.add_argument("--json", action="store_true", help="print JSON (default: a short table)")
    rec.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    rec.add_argument("--no-baselines", action="store_true")
    rec.add_argument("--threads", type=int, default=1, help="torch threads (0: the free cores)")
    rec.add_argument("--batch-size", type=int, default=256)
    rec.set_defaults(func=_recall)


def _recall(args: argparse.Namespace) -> int:
    from moon_rec import runtime
    from moon_rec.retrieval.recall import evaluate_checkpoint

    runtime.set_threads(args.threads)
    result = evaluate_checkpoint(args.world, args.checkpoint, baselines=not args.no_baselines,
                                 batch_size=args.batch_size)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    rows = [("model", result), *list(result.get("baselines", {}).items())]
    print(f"{'':18s} {'R@1':>6s} {'R@10':>6s} {'R@100':>6s} {'text@10':>8s} {'probe':>6s}")
    for name, r in rows:
        if r is None:  # a baseline that could not run here
            print(f"{name:18s} {'n/a':>6s}")
            continue
        cells = [r.get(k) for k in ("recall@1", "recall@10", "recall@100", "text_recall@10",
                                    "probe_acc")]
        # None: "n/a" (image metrics of a text-only world, no text queries)
        print(f"{name:18s} " + " ".join(f"{'n/a' if v is None else f'{v:.3f}':>{w}s}"
                                        for v, w in zip(cells, (6, 6, 6, 8, 6), strict=True)))
    return 0
