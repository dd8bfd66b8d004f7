"""What every command shares: a one-line error parser and the config a command's flags make."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from chainzoom.cli.flags import given
from chainzoom.config import from_mapping, merged, read_toml
from chainzoom.errors import OptionError

EXIT_USAGE = 2
C = TypeVar("C")
#: Namespace keys that are the command's own, not config fields.
COMMAND_KEYS = ("handler", "command", "config", "rerun")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit 2), as every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def add_config_source(parser: argparse.ArgumentParser, rerun: str | None = None) -> None:
    """``--config FILE.toml`` (every option; flags override it) and, if named, ``--rerun``."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", type=Path, default=None, help="a TOML file of options; flags given here override it")
    if rerun:
        group.add_argument("--rerun", type=Path, default=None, help=rerun)


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the user's flags set (the command's own keys left out)."""
    return given(args, ignore=COMMAND_KEYS)


def file_layer(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The options of ``--config`` (or none), and the name of their source for messages."""
    if getattr(args, "config", None) is not None and getattr(args, "rerun", None) is not None:
        raise OptionError("config", "and --rerun both give every option; use one")
    if args.config is not None:
        return read_toml(args.config), str(args.config)
    return {}, "the command line"


def config_from(args: argparse.Namespace, cls: type[C]) -> C:
    """The command's config: ``--config`` (if given), then the flags the user typed."""
    layer, source = file_layer(args)
    return from_mapping(cls, merged(layer, flags_of(args)), source)


def refuse_foreign(flags: dict[str, Any], cls: type, where: str) -> None:
    """A flag the config class has no field for does not apply to this command: say so."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in flags:
        if key not in names:
            raise OptionError(key, f"does not apply to {where}")
