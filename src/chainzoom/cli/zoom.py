"""``chainzoom zoom``: local zooms (``ZoomConfig``) or, with ``--full``, whole-image levels (``FullConfig``).

Every option, input and model is checked before a folder is touched: the config checks
itself, the models load, and every input is decoded and planned, then the runs start.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from chainzoom.cli.flags import add_config_flags
from chainzoom.cli.parsing import add_config_source, file_layer, flags_of, refuse_foreign
from chainzoom.config import FullConfig, ZoomConfig, from_mapping, merged
from chainzoom.errors import OptionError
from chainzoom.job import read_rerun


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "zoom",
        help="zoom into images step by step",
        description="Zoom SCALE times into each INPUT around a point, in 4x steps of one backbone.",
    )
    add_config_flags(parser, ZoomConfig)
    parser.add_argument(
        "--square",
        dest="protocol",
        action="store_const",
        const="official",
        default=argparse.SUPPRESS,
        help="the same as --protocol official (its centred square)",
    )
    full = parser.add_argument_group("full-image mode")
    full.add_argument(
        "--full",
        action="store_true",
        default=argparse.SUPPRESS,
        help="super-resolve the whole image at every level (tiled, streamed to disk, resumable)",
    )
    add_config_flags(full, FullConfig, skip=tuple(f.name for f in dataclasses.fields(ZoomConfig)))
    add_config_source(parser, rerun="a run's manifest.json: make the same run again (into --out)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    flags = flags_of(args)
    full = bool(flags.pop("full", False))
    layer, source = file_layer(args)
    if args.rerun is not None:
        kind, layer = read_rerun(args.rerun)
        source, full = str(args.rerun), full or kind == "full"
    cls: type[ZoomConfig] | type[FullConfig] = FullConfig if full else ZoomConfig
    if not full and "format" in flags:
        raise OptionError("format", "applies only to zoom --full")
    refuse_foreign(flags, cls, "zoom --full" if full else "zoom")
    config = from_mapping(cls, merged(layer, flags), source)
    if isinstance(config, FullConfig):
        return run_full(config)
    return run_local(config)


def run_local(config: ZoomConfig) -> int:
    """Every input into its run folder, through the run driver; bars per image."""
    from chainzoom.api import ChainZoom
    from chainzoom.runs import driver
    from chainzoom.runs.progress import ZoomProgress

    pipeline = ChainZoom.from_config(config)
    batch = driver.start_batch(pipeline.models, config)  # inputs, models and cluster checked before the bars
    with ZoomProgress(enabled=not config.quiet) as progress:
        driver.run_batch(pipeline.models, config, progress, batch)
    return 0


def run_full(config: FullConfig) -> int:
    """The one input's levels, through the run driver; bars per level."""
    from chainzoom.api import ChainZoom
    from chainzoom.runs import driver
    from chainzoom.runs.full import level_count
    from chainzoom.runs.progress import TileProgress

    path = driver.full_input(config)
    config = dataclasses.replace(config, inputs=(str(path),))
    pipeline = ChainZoom.from_config(config)
    if config.executor == "ray":
        from chainzoom.runs.ray_loader import check_ray

        check_ray(config.ray_address)
    _ = pipeline.runtime  # device and dtype checked before the bars (with Ray the models load on the workers)
    levels = level_count(config.scale, pipeline.models.step_factor(driver.effective_models(pipeline.models, config)))
    with TileProgress(path.name, levels, enabled=not config.quiet) as progress:
        driver.run_full(pipeline.models, config, on_tile=progress.update)
    print(config.out)
    return 0
