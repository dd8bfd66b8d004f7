"""``chainzoom eval``: the paper's comparison (chain vs direct SR vs interpolation at x4...x256)
on a folder of images, as a report with tables, plots and sample grids.

:func:`add_eval_parser` adds the subcommand to the CLI's subparsers; the work is done
by :mod:`chainzoom.metrics.harness` and :mod:`chainzoom.metrics.report`, imported only
when the command runs so that ``chainzoom --help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DEFAULT_SCALES = "4,16,64,256"
DEFAULT_MODES = "chain,direct,bicubic,nearest"


def add_eval_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval`` to the subparsers ``commands``; its ``handler`` runs the evaluation."""
    from chainzoom.cli import _add_runtime_arguments  # here, not at import: cli imports this module

    parser = commands.add_parser(
        "eval",
        help="compare chain, direct SR and interpolation on images: metrics, report, plots",
        description=(
            "Zoom into every image with every mode (resumable), score each magnification with "
            "no-reference metrics, fidelity to a downscaled original and drift across steps, "
            "and write results.csv, report.md, plots and sample grids into --out."
        ),
    )
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    parser.add_argument("--scales", default=DEFAULT_SCALES, help=f"powers of 4 (default {DEFAULT_SCALES})")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated (default {DEFAULT_MODES})")
    parser.add_argument("--backbone", default="realesrgan", help="backbone of chain and direct (default realesrgan)")
    parser.add_argument("--prompter", default="null", help="prompter of chain and direct (default null)")
    parser.add_argument(
        "--view", default=None, help="size of every state: N (long side) or WxH (default: the input size)"
    )
    parser.add_argument(
        "--metrics",
        default="all",
        help="no-reference metrics: all (default) or some of niqe,musiq,maniqa,clipiqa,brisque,sharpness,entropy",
    )
    parser.add_argument("--no-fidelity", action="store_true", help="skip the downscale-and-zoom-back fidelity runs")
    parser.add_argument("--no-drift", action="store_true", help="skip drift across steps")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    parser.add_argument("--overwrite", action="store_true", help="remake runs made with other arguments")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _add_runtime_arguments(parser)
    parser.set_defaults(handler=run_eval_command)
    return parser


def command_line(args: argparse.Namespace) -> str:
    """The evaluation's defining arguments as a command, for the report's header."""
    parts = ["chainzoom", "eval", "--images", *map(str, args.images), "--scales", args.scales, "--modes", args.modes]
    parts += ["--backbone", args.backbone, "--prompter", args.prompter]
    if args.view:
        parts += ["--view", args.view]
    if args.metrics != "all":
        parts += ["--metrics", args.metrics]
    parts += [flag for flag, on in (("--no-fidelity", args.no_fidelity), ("--no-drift", args.no_drift)) if on]
    return shlex.join(parts + ["--out", str(args.out)])


def run_eval_command(args: argparse.Namespace) -> int:
    from chainzoom.api import build_backbone
    from chainzoom.io.images import collect_inputs
    from chainzoom.metrics.catalog import load_metrics, parse_metric_names
    from chainzoom.metrics.harness import EvalSettings, Models, evaluate, parse_modes, parse_scales
    from chainzoom.metrics.report import write_report
    from chainzoom.prompts import create_prompter
    from chainzoom.runs.progress import ZoomProgress
    from chainzoom.runtime import resolve_runtime
    from chainzoom.zoom_command import diffusion_options

    runtime = resolve_runtime(args.device, args.dtype, args.threads, args.seed)
    options = diffusion_options(args)
    settings = EvalSettings(
        images=collect_inputs(args.images),
        scales=parse_scales(args.scales),
        modes=parse_modes(args.modes),
        out=args.out,
        view=args.view,
        fidelity=not args.no_fidelity,
        drift=not args.no_drift,
        overwrite=args.overwrite,
        backbone=args.backbone,
        prompter=args.prompter,
        # As `chainzoom zoom` records them, so a run folder means the same in both commands.
        request={
            "runtime": {**runtime.as_manifest(), "engine": args.runtime, "tile": args.tile},
            "backbone_options": options,
        },
    )
    metrics, unavailable = load_metrics(parse_metric_names(args.metrics), runtime.device)
    models = Models(
        lambda: build_backbone(args.backbone, runtime, args.tile, args.tile_overlap, args.runtime, **options),
        lambda: create_prompter(args.prompter, runtime),
    )
    with ZoomProgress(enabled=not args.quiet) as progress:
        results = evaluate(settings, metrics, unavailable, models, progress)
    report = write_report(results, command_line(args))
    print(report)
    return 0
