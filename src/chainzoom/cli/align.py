"""``chainzoom align``: GRPO alignment of the prompt VLM (LoRA adapter) against a critic and text rewards."""

from __future__ import annotations

import argparse
from typing import Any

from chainzoom.cli.flags import add_config_flags
from chainzoom.cli.parsing import add_config_source, config_from
from chainzoom.config import AlignConfig


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "align",
        help="align the prompt VLM with GRPO (LoRA adapter)",
        description="Train a LoRA adapter on the prompt VLM with GRPO against a critic VLM and text rewards; "
        "the training pairs are zoom chains of --backbone on --images.",
    )
    add_config_flags(parser, AlignConfig)
    add_config_source(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chainzoom.align.session import run_align

    config = config_from(args, AlignConfig)
    adapter = run_align(config)
    out = Path(config.out)
    print(f"adapter: {adapter}\nlog: {out / 'log.csv'}\ncurves: {out / 'rewards.png'}")
    return 0
