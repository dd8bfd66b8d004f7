"""``chainzoom study create|serve|report``: a blind pairwise user study of zoom runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chainzoom.cli.parsing import OneLineParser

DEFAULT_PORT = 8766


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "study",
        help="a blind pairwise user study of zoom runs (create, serve, report)",
        description="Build pairwise trials from run folders, serve a blind A/B page, report the votes.",
    )
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP", parser_class=OneLineParser)

    create = steps.add_parser("create", help="build the trials from run folders of the same images")
    create.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="[NAME=]DIR",
        help="one folder per method: a run folder or a folder of them (named by the folder unless NAME= says)",
    )
    create.add_argument("--out", type=Path, required=True, help="the study folder to make (new or empty)")
    create.set_defaults(handler=run_create)

    serve = steps.add_parser("serve", help="serve the blind A/B page and store the votes")
    serve.add_argument("study", type=Path, metavar="STUDY_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    serve.set_defaults(handler=run_serve)

    report = steps.add_parser("report", help="win rates, Bradley–Terry scores and sign tests as markdown")
    report.add_argument("study", type=Path, metavar="STUDY_DIR")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    report.set_defaults(handler=run_report)


def run_create(args: argparse.Namespace) -> int:
    from chainzoom.study.create import create_study, parse_runs

    study = create_study(parse_runs(args.runs), args.out)
    regular = sum(1 for t in study["trials"] if not t.get("attention"))
    print(f"Study {args.out}: {regular} trials and one attention check over {', '.join(study['methods'])}")
    print(f"Serve it with: chainzoom study serve {args.out}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from chainzoom.study.serve import serve

    serve(args.study, args.host, args.port, log=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from chainzoom.study.report import write_report

    print(f"Report: {write_report(args.study, args.seed)}")
    return 0
