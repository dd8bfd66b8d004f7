"""The ``chainzoom`` command line: parses arguments and calls the API, nothing more.

Errors the user can fix print one line and exit with status 2; an interrupted run
exits with 130 and says how to resume. Heavy modules (torch, models) are imported
inside the commands so ``chainzoom --help`` and ``chainzoom models`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from chainzoom import __version__
from chainzoom.align.command import add_align_parser, add_score_arguments
from chainzoom.errors import ChainZoomError
from chainzoom.eval_command import add_eval_parser
from chainzoom.full_command import add_full_arguments, add_view_parser

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainzoom",
        description="Extreme single-image super-resolution by Chain-of-Zoom.",
    )
    parser.add_argument("--version", action="version", version=f"chainzoom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_zoom(commands)
    _add_prompts(commands)
    add_eval_parser(commands)
    add_view_parser(commands)
    add_align_parser(commands)
    models = commands.add_parser("models", help="list registered backbones and prompters")
    models.add_argument("--verbose", "-v", action="store_true", help="load each backbone and show its card")
    models.set_defaults(handler=_models)
    return parser


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    group.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="model precision (default float32; half precision only on GPUs)",
    )
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    group.add_argument(
        "--runtime",
        default="torch",
        choices=("torch", "compile", "ncnn"),
        help="engine for the bundled models: torch (default), compile (torch.compile: slow start, "
        "faster steps) or the ncnn runtime (CPU)",
    )
    group.add_argument(
        "--tile", type=int, default=None, help="upscale in tiles of N input px (default: chosen from free memory)"
    )
    group.add_argument(
        "--tile-overlap",
        type=int,
        default=160,
        help="input px shared by neighbouring tiles: context plus a blended band (default 160)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    diffusion = parser.add_argument_group("diffusion backbones (osediff-sd3, osediff-sd21)")
    diffusion.add_argument(
        "--efficient-memory",
        action="store_true",
        help="the official 24 GB mode: components move to the GPU only while they run",
    )
    diffusion.add_argument(
        "--color-fix",
        choices=("wavelet", "adain", "none"),
        default=None,
        help="keep the input view's colours (default: the backbone's official choice)",
    )


def _add_zoom(commands) -> None:
    zoom = commands.add_parser(
        "zoom",
        help="zoom into images step by step",
        description="Zoom SCALE times into each INPUT around a point, in 4x steps of one backbone.",
    )
    zoom.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    zoom.add_argument(
        "--scale",
        type=float,
        default=256.0,
        help="total magnification relative to the input's pixels, any value > 1 (default 256 = four 4x steps)",
    )
    zoom.add_argument(
        "--center",
        default="0.5,0.5",
        help="zoom point: 'X,Y' fractions of width/height, or 'px:X,Y' pixels (default: the centre)",
    )
    zoom.add_argument("--out", default="out", type=Path, help="output folder (default: out)")
    zoom.add_argument(
        "--mode",
        default="chain",
        choices=("chain", "direct", "bicubic", "nearest"),
        help="chain (Chain-of-Zoom), direct (backbone once, then bicubic), bicubic or nearest",
    )
    zoom.add_argument("--backbone", default="realesrgan", help="backbone spec (see `chainzoom models`)")
    add_prompter_arguments(zoom)
    zoom.add_argument(
        "--view",
        default=None,
        help="size of every state: N (long side) or WxH; default: the input size up to 1024 px, else 512",
    )
    zoom.add_argument(
        "--square",
        action="store_true",
        help="official preprocessing: centred square resized to 512x512 (for comparisons with the paper)",
    )
    zoom.add_argument(
        "--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this (default 200 MP)"
    )
    zoom.add_argument("--overwrite", action="store_true", help="replace a finished or different run in --out")
    zoom.add_argument("--no-animation", action="store_true", help="skip zoom.webp")
    zoom.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _add_runtime_arguments(zoom)
    add_full_arguments(zoom)
    zoom.set_defaults(handler=_zoom)


def add_prompter_arguments(parser: argparse.ArgumentParser) -> None:
    """``--prompter`` and the options of the model-based prompters (unset = the prompter's default)."""
    group = parser.add_argument_group("prompts")
    group.add_argument(
        "--prompter",
        default="null",
        help='null (default), fixed:"text", vlm[:ID_OR_FOLDER], openai:URL,model=NAME, labels',
    )
    group.add_argument("--prompter-model", default=None, help="model name for openai / vlm")
    group.add_argument("--prompter-adapter", default=None, help="LoRA adapter folder for vlm (e.g. a GRPO one)")
    group.add_argument("--prompter-max-tokens", type=int, default=None, help="longest prompt in tokens")
    group.add_argument("--prompter-sample", action="store_true", help="sample (seeded by --seed) instead of greedy")
    group.add_argument("--prompter-offload", action="store_true", help="keep the VLM on the CPU between steps")
    group.add_argument("--prompter-timeout", type=float, default=None, help="seconds per request for openai")
    group.add_argument("--prompt", default=None, help="your own text, joined to each generated prompt")


def _add_prompts(commands) -> None:
    prompts = commands.add_parser(
        "prompts",
        help="show the prompts a zoom would use",
        description="Run the chain with --backbone (states after the first need it) and print each step's prompt.",
    )
    prompts.add_argument("input", metavar="INPUT", help="an image file")
    prompts.add_argument("--scale", type=float, default=256.0, help="total magnification (default 256)")
    prompts.add_argument("--center", default="0.5,0.5", help="zoom point, as for zoom")
    prompts.add_argument("--view", default=None, help="state size, as for zoom")
    prompts.add_argument(
        "--backbone", default="realesrgan", help="backbone that makes the states (bicubic: a fast preview)"
    )
    prompts.add_argument("--cache", type=Path, default=None, help="prompt cache file to read and fill")
    add_prompter_arguments(prompts)
    add_score_arguments(prompts)
    _add_runtime_arguments(prompts)
    prompts.set_defaults(handler=_prompts)


def _zoom(args: argparse.Namespace) -> int:
    if args.full:
        from chainzoom.full_command import run_full_command

        return run_full_command(args)
    from chainzoom.zoom_command import run_zoom_command

    return run_zoom_command(args)


def _prompts(args: argparse.Namespace) -> int:
    from chainzoom.prompts_command import run_prompts_command

    return run_prompts_command(args)


def _models(args: argparse.Namespace) -> int:
    from chainzoom.backbones import BACKBONES
    from chainzoom.prompts import PROMPTERS

    print("Backbones (--backbone):")
    for entry in BACKBONES.entries.values():
        print(f"  {entry.name:<14} {entry.description}")
    print("Prompters (--prompter):")
    for entry in PROMPTERS.entries.values():
        print(f"  {entry.name:<14} {entry.description}")
    if args.verbose:
        from chainzoom.model_cards import print_backbone_cards

        print_backbone_cards(BACKBONES)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ChainZoomError as exc:
        print(f"chainzoom: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chainzoom: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
