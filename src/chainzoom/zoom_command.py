"""``chainzoom zoom``: validate everything first, then run each input into its folder.

All inputs are loaded and planned before any model is built or any folder is
created, so a bad input, flag or model name leaves no partial output behind.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from chainzoom.api import build_backbone, square_crop
from chainzoom.core.geometry import ZoomPlan, default_view, parse_center, parse_view, plan_zoom
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import DEFAULT_MAX_PIXELS, LoadedImage, collect_inputs, input_names, load_image
from chainzoom.prompter_flags import build_prompter, prompter_options
from chainzoom.runs.local import RunFolder, RunRequest, execute_run, sha256_file
from chainzoom.runs.progress import ZoomProgress
from chainzoom.runtime import resolve_runtime


@dataclass
class Job:
    path: Path
    image: LoadedImage
    plan: ZoomPlan
    out: Path


def run_zoom_command(args: argparse.Namespace) -> int:
    if args.mode not in ("chain", "direct") and args.backbone != "realesrgan":
        raise ChainZoomError(f"--mode {args.mode} uses no backbone; drop --backbone")
    runtime = resolve_runtime(args.device, args.dtype, args.threads, args.seed)
    paths = collect_inputs(args.inputs)
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    images = [(path, _prepare(load_image(path, max_pixels=max_pixels), args.square)) for path in paths]
    needs_model = args.mode in ("chain", "direct")
    backbone = (
        build_backbone(args.backbone, runtime, args.tile, args.tile_overlap, args.runtime, **diffusion_options(args))
        if needs_model
        else None
    )
    step = backbone.scale if backbone is not None else 4
    # One input writes into --out; several write into --out/<name> each.
    outs = [args.out] if len(paths) == 1 else [args.out / name for name in input_names(paths)]
    jobs = [Job(path, image, _plan(image, args, step), out) for (path, image), out in zip(images, outs)]
    prompter = build_prompter(args, runtime) if needs_model else None
    with ZoomProgress(enabled=not args.quiet) as progress:
        progress.start_batch(len(jobs))
        for job in jobs:
            request = RunRequest(
                input=str(job.path),
                input_sha256=sha256_file(job.path),
                mode=args.mode,
                scale=args.scale,
                center=job.plan.center,
                view=job.plan.view,
                square=args.square,
                backbone=args.backbone if needs_model else None,
                prompter=args.prompter if needs_model else None,
                runtime={**runtime.as_manifest(), "engine": args.runtime, "tile": args.tile},
                extra={
                    "backbone_options": diffusion_options(args),
                    "prompter_options": prompter_options(args) if needs_model else {},
                },
            )
            progress.start(job.path.name, len(job.plan.steps) + 1)
            execute_run(
                RunFolder(job.out),
                job.image,
                job.plan,
                request,
                backbone,
                prompter,
                overwrite=args.overwrite,
                animation=not args.no_animation,
                on_state=progress.advance,
            )
            progress.finish(job.out)
    return 0


def diffusion_options(args: argparse.Namespace) -> dict:
    """The diffusion-backbone flags the user actually set (others keep the backbone's defaults)."""
    options: dict = {}
    if args.efficient_memory:
        options["efficient_memory"] = True
    if args.color_fix is not None:
        options["color_fix"] = args.color_fix
    return options


def _prepare(image: LoadedImage, square: bool) -> LoadedImage:
    return square_crop(image) if square else image


def _plan(image: LoadedImage, args: argparse.Namespace, step: int) -> ZoomPlan:
    size = image.size
    view = parse_view(args.view, size, step) if args.view else default_view(size, step)
    return plan_zoom(size, args.scale, parse_center(args.center, size), view, step)
