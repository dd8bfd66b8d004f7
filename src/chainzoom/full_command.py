"""``chainzoom zoom --full`` and ``chainzoom view``: the command-line side of full-image mode.

cli.py stays thin: it calls :func:`add_full_arguments` on the ``zoom`` parser,
hands ``args`` to :func:`run_full_command` when ``--full`` is set, and calls
:func:`add_view_parser` on its subcommands. Everything is checked (flags, input,
scale, memory for PNG) before a folder is touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chainzoom.errors import ChainZoomError

DEFAULT_PORT = 8765
#: ``--format`` choices, the same as :data:`chainzoom.runs.pyramid.FORMATS` (a test checks): not
#: imported from there, since that pulls in numpy and cli.py builds its parser from this module.
FORMATS = ("tiff", "dzi", "png")


def add_full_arguments(zoom: argparse.ArgumentParser) -> None:
    """Add ``--full`` and ``--format`` to the ``zoom`` parser."""
    group = zoom.add_argument_group("full-image mode")
    group.add_argument(
        "--full",
        action="store_true",
        help="super-resolve the whole image at every level (tiled, streamed to disk, resumable)",
    )
    group.add_argument(
        "--format",
        choices=FORMATS,
        default="tiff",
        help="--full output per level: tiff (pyramidal BigTIFF, default), dzi (Deep Zoom), "
        "png (only when a level fits in memory)",
    )


def run_full_command(args: argparse.Namespace) -> int:
    """Run ``chainzoom zoom INPUT --full``: one input, one run folder, every level on disk."""
    from chainzoom.api import build_backbone, square_crop
    from chainzoom.io.images import DEFAULT_MAX_PIXELS, collect_inputs, load_image
    from chainzoom.prompter_flags import build_prompter
    from chainzoom.runs.full import DEFAULT_TILE, level_count, zoom_full
    from chainzoom.runs.local import RunRequest, backbone_record, sha256_file
    from chainzoom.runs.progress import TileProgress
    from chainzoom.runtime import resolve_runtime
    from chainzoom.zoom_command import diffusion_options

    _check_flags(args)
    paths = collect_inputs(args.inputs)
    if len(paths) != 1:
        raise ChainZoomError(f"--full takes one input image, got {len(paths)}; run one command per image")
    path = paths[0]
    image = load_image(path, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    if args.square:
        image = square_crop(image)
    runtime = resolve_runtime(args.device, args.dtype, args.threads, args.seed)
    backbone = build_backbone(args.backbone, runtime, None, args.tile_overlap, args.runtime, **diffusion_options(args))
    levels = level_count(args.scale, backbone.scale)
    prompter = None if args.prompter == "null" else build_prompter(args, runtime)
    tile = args.tile or DEFAULT_TILE
    request = RunRequest(
        input=str(path),
        input_sha256=sha256_file(path),
        mode="full",
        scale=args.scale,
        center=(0.5, 0.5),
        view=image.size,
        square=args.square,
        backbone=args.backbone,
        prompter=args.prompter,
        runtime={**runtime.as_manifest(), "engine": args.runtime},
        extra={
            "format": args.format,
            "tile": tile,
            "tile_overlap": args.tile_overlap,
            "backbone_options": diffusion_options(args),
        },
    )
    with TileProgress(path.name, levels, enabled=not args.quiet) as progress:
        zoom_full(
            image,
            args.out,
            backbone,
            prompter,
            levels=levels,
            fmt=args.format,
            tile=tile,
            overlap=args.tile_overlap,
            request=request.as_dict(),
            backbone_record=backbone_record(backbone),
            overwrite=args.overwrite,
            on_tile=progress.update,
        )
    print(args.out)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse local-zoom flags that mean nothing for a whole-image run, instead of ignoring them."""
    if args.mode != "chain":
        raise ChainZoomError(f"--full runs the chain; --mode {args.mode} does not apply")
    if args.view is not None:
        raise ChainZoomError("--view does not apply to --full (every level is the whole image)")
    if args.center != "0.5,0.5":
        raise ChainZoomError("--center does not apply to --full (every level is the whole image)")
    if args.no_animation:
        raise ChainZoomError("--no-animation does not apply to --full (it writes no animation)")


def add_view_parser(commands) -> None:
    """Add ``chainzoom view RUN_DIR`` to an argparse subparsers object."""
    view = commands.add_parser(
        "view",
        help="serve a deep-zoom viewer of a run folder on localhost",
        description="Serve a pan-and-zoom viewer of RUN_DIR (a --full run or a local zoom run) on 127.0.0.1.",
    )
    view.add_argument("run", type=Path, metavar="RUN_DIR", help="a folder written by chainzoom zoom")
    view.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free)"
    )
    view.add_argument("--open", action="store_true", help="also open the page in the default browser")
    view.set_defaults(handler=run_view_command)


def run_view_command(args: argparse.Namespace) -> int:
    from chainzoom.viewer.server import serve

    serve(args.run, args.port, open_browser=args.open, log=sys.stderr)
    return 0
