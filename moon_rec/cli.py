"""The `moon` command: one entry point whose subcommands live beside the code they run.

Each package contributes its subcommands through ``register(subparsers)`` in its own
``cli.py``; this module only assembles them and turns bad input into ``error: ...`` with
exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules exposing ``register(subparsers: argparse._SubParsersAction) -> None``.
COMMAND_MODULES: list[str] = [
    "moon_rec.data.cli",
    "moon_rec.ranking.cli",
    "moon_rec.training.cli",
    "moon_rec.retrieval.cli",
    "moon_rec.featurestore.cli",
    "moon_rec.studies.cli",
    "serving.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moon",
        description="MOON multimodal item representations: world, encoder, features, ranker.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``moon``; returns (and exits with) the process status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except ValueError as exc:  # DataError and every user-facing validation error
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    if argv is None:
        sys.exit(int(status or 0))
    return int(status or 0)


if __name__ == "__main__":
    main()
