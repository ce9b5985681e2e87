"""Command lines generated from config dataclasses: one flag per field, so the config and its CLI cannot drift apart.

flax's lm1b example keeps one config and derives the command line from it; ``config_parser(TrainConfig, ...)`` does
the same with argparse alone. For each field of the dataclass:
- the flag is the field's name with dashes: ``--batch-size`` for ``batch_size``;
- its type and default are the field's (``int | None`` takes an int and defaults to None); a bool is a switch
  (``--fp8``), so it must default to False;
- its help text and allowed values are the field's metadata ``"help"`` and ``"choices"`` (``setting(...)`` writes
  them), the choices being the very tuple the dataclass validates against;
- a field of another type (a dict of overrides) has no flag: it is for Python callers.
Errors are one line (``error: argument --balance: invalid choice: ...``): no usage dump, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Config = TypeVar("Config")
FLAG_TYPES = (str, int, float, bool)


def setting(default: Any, help_text: str, **metadata: Any) -> Any:
    """A dataclass field and the help (and ``choices``) of its flag: ``steps: int = setting(200, "steps to run")``."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump, no traceback
        self.exit(2, f"error: {message}\n")


class DefaultsHelp(argparse.HelpFormatter):
    """``--help`` adds each flag's default, unless it is None or False or the help text already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str:  # the hook ArgumentDefaultsHelpFormatter uses
        text = action.help or ""
        shown = not any(action.default is x for x in (None, False, argparse.SUPPRESS))  # `is`: 0 == False
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def flag_type(hint: Any) -> type | None:
    """The flag's type for a field annotated ``hint``: str, int, float, bool, or one of them ``| None``; else None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in FLAG_TYPES else None


def config_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per field of the dataclass ``cls`` (see the module docstring); ``--help`` shows each
    field's help and default."""
    parser = OneLineErrors(prog=prog, description=description, formatter_class=DefaultsHelp)
    hints, defaults = typing.get_type_hints(cls), cls()
    for f in dataclasses.fields(cls):
        kind, flag, default = flag_type(hints[f.name]), "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if kind is bool:
            if default:
                raise TypeError(f"{cls.__name__}.{f.name} defaults to True: a switch could never turn it off")
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        elif kind is not None:
            parser.add_argument(flag, type=kind, default=default, choices=f.metadata.get("choices"),
                                help=f.metadata["help"])
    return parser


def config_from_args(cls: type[Config], args: argparse.Namespace) -> Config:
    """The dataclass ``cls`` built from parsed flags; other entries of ``args`` (``--resume``) are not its business."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def command_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """``config_parser`` plus ``--no-progress``, which every command of the course takes (how to run, not what)."""
    parser = config_parser(cls, prog, description)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                body: Callable[[argparse.Namespace], int]) -> int:
    """Parse ``argv`` and return ``body(args)``'s exit status. A ValueError (a value or combination the config
    rejects) becomes one line, ``error: ...``, and status 2, like argparse's own errors: no traceback."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def command_line(prog: str, argv: Sequence[str] | None) -> str:
    """The command as typed (``argv`` or else ``sys.argv[1:]`` after ``prog``): a run's provenance in its files."""
    return " ".join([prog, *(argv if argv is not None else sys.argv[1:])])
