"""``chainzoom view RUN_DIR``: serve a deep-zoom viewer of a run folder on 127.0.0.1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8765


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "view",
        help="serve a deep-zoom viewer of a run folder on localhost",
        description="Serve a pan-and-zoom viewer of RUN_DIR (a --full run or a local zoom run) on 127.0.0.1.",
    )
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a folder written by chainzoom zoom")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument("--open", action="store_true", help="also open the page in the default browser")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from chainzoom.viewer.server import serve

    serve(args.run, args.port, open_browser=args.open, log=sys.stderr)
    return 0
