"""A ``moon`` command as data: the one definition of what a subcommand does, shared by the
CLI (the top floor) and the loop (below it, so it may not import the CLI).

A :class:`MoonCommand` subclass is a strict pydantic model of one subcommand's options: its
``words`` (its place under ``moon``: ``("world", "generate")``), one field per option (the
field's name is the option's argparse ``dest``, its default the option's default), and
``run()``, what the command does. The CLI parses a command line into the request
(:meth:`MoonCommand.from_args`) and runs it; a loop step declares its requests and runs
them, and prints them as :meth:`MoonCommand.shell` renders them. So a step and the command
it prints are one definition: ``tests/loop`` parses every printed command with ``moon``'s
own parser and checks it gives back the step's requests.

Example::

    cmd = WorldShow(world=Path("w"), out=Path("sheet.png"))   # a subclass
    cmd.argv()        # ["world", "show", "w", "--out", "sheet.png"]
    cmd.shell()       # "moon world show w --out sheet.png"
    cmd.run()         # what `moon world show w --out sheet.png` does
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from moon_rec.runtime import atomic_write_text


class MoonCommand(BaseModel):
    """One ``moon`` subcommand with its options (see the module docstring).

    Class attributes:
        words: the subcommand's words after ``moon``.
        positional: fields given positionally, in order, before the options.
        flags: field -> option string where it is not ``--field-name``.
        repeated: list fields given once per value (argparse ``action="append"``); other
            list fields take their values after one option (``nargs="+"``).
        code: the library modules ``run`` calls (their import closure is in a loop step's
            key).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: ClassVar[tuple[str, ...]] = ()
    positional: ClassVar[tuple[str, ...]] = ()
    flags: ClassVar[dict[str, str]] = {}
    repeated: ClassVar[frozenset[str]] = frozenset()
    code: ClassVar[tuple[str, ...]] = ()

    def run(self) -> int:  # pragma: no cover - every subclass has one
        """Do what the command does; returns its exit status."""
        raise NotImplementedError

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The request of a parsed command line (the parser's ``dest`` names are the
        fields)."""
        return cls.model_validate({name: getattr(args, name) for name in cls.model_fields})

    @classmethod
    def option(cls, name: str) -> str:
        """The option string of field ``name``."""
        return cls.flags.get(name, "--" + name.replace("_", "-"))

    def argv(self) -> list[str]:
        """The command line after ``moon``: positionals, then every option whose value is
        not its default (booleans are ``store_true`` switches)."""
        words = [*self.words, *(_word(getattr(self, n)) for n in self.positional)]
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name in self.positional or value is None:
                continue
            if not field.is_required() and value == field.get_default(call_default_factory=True):
                continue
            flag = self.option(name)
            if isinstance(value, bool):
                if not value:
                    raise ValueError(f"{self.shell_name()}: {flag} is a switch; its field "
                                     f"{name} cannot default to True")
                words.append(flag)
            elif isinstance(value, list | tuple):
                if name in self.repeated:
                    for v in value:
                        words += [flag, _word(v)]
                else:
                    words += [flag, *(_word(v) for v in value)]
            else:
                words += [flag, _word(value)]
        return words

    def shell(self) -> str:
        """The command line as one shell-quoted string, ``moon ...``."""
        return shlex.join(["moon", *self.argv()])

    @classmethod
    def shell_name(cls) -> str:
        return " ".join(["moon", *cls.words])


def _word(value: Any) -> str:
    return str(value)


def run_parsed(args: argparse.Namespace) -> int:
    """The CLI handler of every command declared as a :class:`MoonCommand`: the request
    parsed from ``args`` (``args.moon_command`` is its class), run."""
    command: MoonCommand = args.moon_command.from_args(args)
    return int(command.run() or 0)


def handled_by(command: type[MoonCommand]) -> dict[str, Any]:
    """``parser.set_defaults(**handled_by(Cls))``: the subcommand parses into ``Cls`` and
    runs it."""
    return {"func": run_parsed, "moon_command": command}


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON in ``path`` (atomically; parent folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
