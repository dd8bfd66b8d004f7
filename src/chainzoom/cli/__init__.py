"""The ``chainzoom`` command line: flags in, a config out, the API does the work.

Nothing outside this package imports it. Errors the user can fix print one line and
exit with status 2 (options by their flag names); an interrupted run exits with 130 and
says how to resume. Heavy modules (torch, models) are imported inside the commands, so
``chainzoom --help`` and ``chainzoom models`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from chainzoom import __version__
from chainzoom.cli import align, app, evaluate, models, prompts, study, train, view, zoom
from chainzoom.cli.flags import flag_name
from chainzoom.cli.parsing import EXIT_USAGE, OneLineParser
from chainzoom.errors import ChainZoomError, OptionError

EXIT_INTERRUPTED = 130


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="chainzoom", description="Extreme single-image super-resolution by Chain-of-Zoom.")
    parser.add_argument("--version", action="version", version=f"chainzoom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for command in (zoom, prompts, evaluate, view, align, train, models, app, study):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except OptionError as exc:
        print(f"chainzoom: error: {flag_name(exc.option)}: {exc.problem}", file=sys.stderr)
        return EXIT_USAGE
    except ChainZoomError as exc:
        print(f"chainzoom: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chainzoom: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
