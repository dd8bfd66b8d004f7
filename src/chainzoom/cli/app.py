"""``chainzoom app``: the web app (Gradio, the ``[app]`` extra) on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chainzoom.cli.flags import FLAGS

DEFAULT_PORT = 7860
DEFAULT_FOLDER = Path("chainzoom-app")


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "app",
        help="a web app: upload, click where to zoom, watch the chain (Gradio)",
        description="Serve the chainzoom web app. Runs are ordinary run folders under --folder.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        dest="allow_host",
        help=FLAGS["allow_host"].help,
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=DEFAULT_FOLDER,
        help=f"where the app keeps its inputs and run folders (default ./{DEFAULT_FOLDER})",
    )
    parser.add_argument("--max-upload-mb", type=int, default=50, help="largest upload accepted, in MB (default 50)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest image accepted, in pixels (default 40,000,000: larger ones are refused as likely bombs)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from chainzoom.app.jobs import DEFAULT_MAX_PIXELS
    from chainzoom.app.server import launch

    launch(
        args.folder,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        allow_hosts=args.allow_host,
    )
    return 0
