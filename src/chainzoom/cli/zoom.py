"""``chainzoom zoom``: local zooms (``ZoomConfig``) or, with ``--full``, whole-image levels (``FullConfig``).

Every option, input and model is checked before a folder is touched: the config checks
itself, the models load, and every input is decoded and planned, then the runs start.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from chainzoom.cli.flags import add_config_flags
from chainzoom.cli.parsing import add_config_source, file_layer, flags_of, refuse_foreign
from chainzoom.config import FullConfig, ZoomConfig, from_mapping, merged, read_rerun
from chainzoom.core.vocabulary import MODEL_MODES
from chainzoom.errors import OptionError


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
    from chainzoom.api import ChainZoom
    from chainzoom.io.images import collect_inputs, input_names
    from chainzoom.runs.progress import ZoomProgress

    if config.executor == "ray":
        return run_batch(config)
    paths = collect_inputs(config.inputs)
    pipeline = ChainZoom.from_config(config)
    # Every input is decoded and planned before the models load (a bad one stops the batch
    # with nothing loaded or written); it is decoded again for its run, so memory holds one
    # image, not the batch.
    for path in paths:
        pipeline.plan(pipeline.load_input(path, config).size, config)
    if config.mode in MODEL_MODES:
        pipeline.load()
    # One input writes into --out; several write into --out/<name> each.
    out = Path(config.out)
    outs = [out] if len(paths) == 1 else [out / name for name in input_names(paths)]
    with ZoomProgress(enabled=not config.quiet) as progress:
        progress.start_batch(len(paths))
        for path, folder in zip(paths, outs):
            loaded, plan = pipeline.prepare(path, config)
            progress.start(path.name, len(plan.steps) + 1)
            pipeline.run(path, loaded, plan, config, on_state=progress.advance, out=folder)
            progress.finish(folder)
    return 0


def run_full(config: FullConfig) -> int:
    from chainzoom.api import ChainZoom
    from chainzoom.io.images import collect_inputs
    from chainzoom.runs.progress import TileProgress

    paths = collect_inputs(config.inputs)
    if len(paths) != 1:
        raise OptionError("inputs", f"--full takes one input image, got {len(paths)}; run one command per image")
    config = dataclasses.replace(config, inputs=(str(paths[0]),))
    pipeline = ChainZoom.from_config(config)
    from chainzoom.runs.full import level_count

    if config.executor == "ray":
        from chainzoom.runs.ray_loader import check_ray

        check_ray(config.ray_address)
        _ = pipeline.runtime  # device and dtype checked before the bars (the models load on the workers)
        levels = level_count(config.scale, pipeline.step_factor())
    else:
        levels = level_count(config.scale, pipeline.backbone.scale)
    with TileProgress(paths[0].name, levels, enabled=not config.quiet) as progress:
        pipeline.run_full(config, on_tile=progress.update)
    print(config.out)
    return 0


def run_batch(config: ZoomConfig) -> int:
    """Every input as a task on a Ray actor (``--executor ray``); the folders are written here."""
    from chainzoom.api import ChainZoom
    from chainzoom.runs.progress import ZoomProgress
    from chainzoom.runs.ray_loader import check_ray

    check_ray(config.ray_address)
    pipeline = ChainZoom.from_config(config)
    _ = pipeline.runtime  # device and dtype checked before the bars (the models load on the workers)
    batch = pipeline.check_batch(config)
    with ZoomProgress(enabled=not config.quiet) as progress:
        pipeline.run_batch(config, progress, batch)
    return 0
