"""`moon eval recall`: image-search recall per Matryoshka dim, text recall, category probe,
with the untrained-encoder and colour-histogram baselines computed in the same run."""

from __future__ import annotations

import argparse
from pathlib import Path

from moon_rec.command import handled_by
from moon_rec.retrieval.commands import Recall


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
    rec.add_argument("--json", dest="as_json", action="store_true",
                     help="print JSON (default: a short table)")
    rec.add_argument("--out", type=Path, action="append", default=[],
                     help="also write the JSON here (repeatable)")
    rec.add_argument("--no-baselines", action="store_true")
    rec.add_argument("--threads", type=int, default=1, help="torch threads (0: the free cores)")
    rec.add_argument("--batch-size", type=int, default=256)
    rec.set_defaults(**handled_by(Recall))
