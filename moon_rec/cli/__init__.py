"""The `moon` command: the top layer of the library, the one place its subcommands live.

``moon_rec.cli.<group>`` modules each add one group of subcommands through
``register(subparsers)``; they may import any library package (nothing imports them).
Applications built on the library (the online service in ``serving/``) add their own
subcommands as plug-ins: a ``register`` function named in the ``moon_rec.commands``
entry-point group (``moon serve`` is ``serving.cli:register``, declared in
``pyproject.toml``), so the library never imports them. This module assembles the parser
and turns bad input into ``error: ...`` with exit status 2 instead of a traceback.

The batch commands the loop runs are requests defined below the CLI, beside their jobs
(``moon_rec.<package>.commands``, :class:`moon_rec.command.MoonCommand`): their parsers
here name options after the request's fields and ``handled_by(Request)`` runs the parsed
request, so ``moon ...`` and the loop's step run one definition.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

# Modules exposing ``register(subparsers: argparse._SubParsersAction) -> None``.
COMMAND_MODULES: list[str] = [
    "moon_rec.cli.data",
    "moon_rec.cli.ranker",
    "moon_rec.cli.encoder",
    "moon_rec.cli.eval",
    "moon_rec.cli.features",
    "moon_rec.cli.study",
]

# Entry-point group of plug-in ``register`` functions (applications on top of the library).
PLUGIN_GROUP = "moon_rec.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moon",
        description="MOON multimodal item representations: world, encoder, features, ranker.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        plugin.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``moon``; returns (and exits with) the process status.

    Bad input exits 2 with ``error: ...`` on stderr, never a traceback: ``DataError`` and
    other ``ValueError``s (their messages name file, column and row), ``OSError``s
    (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``, ...: named by
    their file) and any pyarrow error a reader let through.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except ValueError as exc:  # DataError, pyarrow's ArrowInvalid, validation errors
        status = _fail(str(exc))
    except OSError as exc:
        status = _fail(os_error_message(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except Exception as exc:
        if not _is_arrow_error(exc):
            raise  # a bug: keep its traceback
        status = _fail(f"unreadable data ({type(exc).__name__}: {exc})")
    if argv is None:
        sys.exit(int(status or 0))
    return int(status or 0)


def os_error_message(exc: OSError) -> str:
    """``FILE: why`` for an OSError that names its file (``why`` alone otherwise)."""
    if exc.filename is None:
        return str(exc)
    why = exc.strerror or str(exc)
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {why}"
    return f"{exc.filename}: {why}"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _is_arrow_error(exc: BaseException) -> bool:
    # pyarrow is not imported to build the parser; an arrow error implies it is loaded
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(exc, pa.lib.ArrowException)
