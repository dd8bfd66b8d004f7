"""``chainzoom train-backbone``: train OSEDiff on SD3 (LoRAs), writing the official checkpoint files."""

from __future__ import annotations

import argparse
from typing import Any

from chainzoom.cli.flags import add_config_flags
from chainzoom.cli.parsing import add_config_source, config_from
from chainzoom.train.config import TrainBackboneConfig


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "train-backbone",
        help="train the SR backbone (OSEDiff on SD3) on a folder of photos",
        description="Train LoRAs on SD3 medium's transformer and VAE encoder for one-step 4x SR (OSEDiff's recipe), "
        "on (HR, LR) pairs degraded on the fly; writes model_<step>.pkl and vae_encoder_<step>.pt for "
        "--backbone osediff-sd3:SD3_DIR,lora=...,vae=...",
    )
    add_config_flags(parser, TrainBackboneConfig)
    add_config_source(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from chainzoom.train.session import run_train_backbone

    config = config_from(args, TrainBackboneConfig)
    run_train_backbone(config)
    return 0
