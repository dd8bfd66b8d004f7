"""Every flag of every command, derived from the config classes' fields.

A command's parser gets exactly the fields of its config class (so it accepts exactly
the options it honours), each flag named after its field (``prompter_max_tokens`` is
``--prompter-max-tokens``; the runtime's fields are top-level flags). All flags default
to "not given", so :func:`given` returns only what the user typed, which then overrides
a ``--config`` file or a ``--rerun`` manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from chainzoom.runtime import DEFAULT_OVERLAP, FULL_IMAGE_TILE, Runtime


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    help: str
    names: tuple[str, ...] = ()
    #: ``store_true``, or ``store_false`` for a ``--no-...`` flag of a field that defaults to true.
    action: str | None = None
    parse: Callable[[str], Any] | None = None
    nargs: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    positional: bool = False


def comma_list(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def comma_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers such as 4,16,64, got {text!r}") from None


def comma_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 2,4, got {text!r}") from None


def number_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


FLAGS: dict[str, Flag] = {
    # the servers' own flags (chainzoom view / app / study serve), here so that errors name them
    "port": Flag("the port to serve on"),
    "host": Flag("the address to bind (default 127.0.0.1)"),
    "allow_host": Flag(
        "app: another name the app answers to in the Host header (repeatable): a name this machine is reached "
        "by, e.g. when --host is not 127.0.0.1; requests for any other name, or from another site's page, get 403",
        names=("--allow-host",),
    ),
    # inputs and outputs
    "inputs": Flag("image files or folders of images", positional=True, nargs="*", metavar="INPUT"),
    "input": Flag("an image file", positional=True, nargs="?", metavar="INPUT"),
    "images": Flag("image files or folders (the flag may be repeated)", nargs="+", metavar="PATH", action="extend"),
    "out": Flag("output folder"),
    "overwrite": Flag("replace a finished or different run in --out", action="store_true"),
    "quiet": Flag("no progress bars", names=("--quiet", "-q"), action="store_true"),
    "animation": Flag("skip zoom.webp", names=("--no-animation",), action="store_false"),
    "marking": Flag(
        "xmp: every image written carries XMP saying it was generated (IPTC digital source "
        "type, the chain; docs/provenance.md); none: no marking, printed once and recorded in the manifest",
        choices=("xmp", "none"),
    ),
    "max_pixels": Flag("refuse inputs with more pixels than this (default 200 MP)"),
    # the zoom
    "scale": Flag("total magnification relative to the input's pixels, any value > 1"),
    "center": Flag("zoom point: 'X,Y' fractions of width/height, or 'px:X,Y' pixels"),
    "view": Flag("size of every state: N (long side) or WxH; default: the input size up to 1024 px, else 512"),
    "mode": Flag(
        "chain (Chain-of-Zoom), direct (backbone once, then bicubic), onestep (the official baseline: "
        "bicubic, then the backbone once), bicubic or nearest"
    ),
    "contexts": Flag(
        "eval: the model modes once per VLM context, comma-separated (multiscale,single: the paper's "
        "prompt ablation); default: the prompter as configured"
    ),
    "policy": Flag(
        "zoom: fixed (one backbone, 4x steps; default) or adaptive (each step's backbone and factor chosen "
        "by NIQE among --backbones and --factors, with an early stop when a step adds no detail); "
        "align: the prompt VLM to align, a folder or hub id"
    ),
    "backbones": Flag("adaptive: candidate backbones, comma-separated (default: --backbone alone)", parse=comma_list),
    "factors": Flag("adaptive: the step factors to choose from, comma-separated (default 2,4)", parse=comma_floats),
    "stop_below": Flag(
        "adaptive: stop when the best step improves NIQE over bicubic by less than this (default 0: no "
        "better than interpolation); none never stops early",
        parse=number_or_none,
    ),
    "consistency": Flag(
        "after each chain step: anchor (colours of the input image's region; the chain's default), "
        "none (the paper's chain), wavelet/adain (colours of the step's input), backprojection "
        "(downscaled output = the step's input); --full: anchor (default), wavelet, backprojection or none; "
        "eval: comma-separated, the chain once per method (default none)"
    ),
    "protocol": Flag(
        "chainzoom (float, full resolution, any point; default) or official (inference_coz.py's 8-bit "
        "arithmetic on its centred --process-size square: to reproduce the paper's outputs)"
    ),
    "process_size": Flag("protocol official: the side of its square and of every state (default 512)"),
    "format": Flag(
        "--full output per level: tiff (pyramidal BigTIFF), dzi (Deep Zoom), png (only when a level fits in memory)"
    ),
    # models
    "backbone": Flag("backbone spec (see `chainzoom models`); default realesrgan"),
    "efficient_memory": Flag(
        "diffusion backbones: the official 24 GB mode, components on the GPU only while they run",
        action="store_true",
    ),
    "numerics": Flag(
        "diffusion backbones: chainzoom (one dtype, LoRAs merged; default) or official (the official "
        "inference's precisions: fp16 text encoders and weights, LoRAs applied unmerged; for --protocol official)"
    ),
    "color_fix": Flag(
        "diffusion backbones: keep the view's colours (wavelet, adain, none; default: the backbone's choice)"
    ),
    "prompter": Flag('null (default), fixed:"text", vlm[:ID_OR_FOLDER], openai:URL,model=NAME, labels'),
    "prompter_model": Flag("model name for openai / vlm"),
    "prompter_adapter": Flag("LoRA adapter folder for vlm (e.g. a GRPO one)"),
    "prompter_max_tokens": Flag("longest prompt in tokens"),
    "prompter_sample": Flag("sample (seeded by --seed) instead of greedy", action="store_true"),
    "prompter_context": Flag(
        "the VLM's context: multiscale (two images, the paper's) or single", choices=("multiscale", "single")
    ),
    "prompter_offload": Flag("keep the VLM on the CPU between steps", action="store_true"),
    "prompter_timeout": Flag("seconds per request for openai"),
    "prompt": Flag("your own text, joined to each generated prompt"),
    # executor
    "executor": Flag("where the work runs: local (this process) or ray (actors of a Ray cluster)"),
    "ray_address": Flag(
        "Ray cluster to join: HOST:PORT, ray://HOST:PORT or auto (default: RAY_ADDRESS, else a private Ray on this machine)"
    ),
    "workers": Flag("Ray actors, each holding one backbone and prompter (default: one per GPU, else per CPU)"),
    # runtime
    "device": Flag("auto | cpu | cuda | cuda:N | mps"),
    "dtype": Flag(
        "model precision: auto (default: the backbone's fastest safe one here, see chainzoom models "
        "--verbose), float32, bfloat16 (CPUs with native bf16, or GPUs), float16 (GPUs)"
    ),
    "allow_slow_dtype": Flag(
        "run --dtype bfloat16 on a CPU without native bf16 (several times slower)", action="store_true"
    ),
    "threads": Flag("CPU threads for torch (default: torch's)"),
    "seed": Flag("seed for every random choice"),
    "engine": Flag(
        "how the backbone runs: torch, compile (torch.compile: slow start, faster steps) or ncnn (bundled models)",
        names=("--engine", "--runtime"),
    ),
    "memory": Flag(
        "which models stay on the GPU between uses: auto (default: the most resident plan that fits the "
        "free memory), resident, text-offload (the SR model stays; text encoders and VLM take turns), "
        "sequential (each model only while it runs: the official --efficient_memory)"
    ),
    "tile": Flag(
        f"upscale in tiles of N input px (default: chosen from free memory; {FULL_IMAGE_TILE} for zoom --full)"
    ),
    "tile_overlap": Flag(f"input px shared by neighbouring tiles (default {DEFAULT_OVERLAP}, or half a smaller tile)"),
    # prompts
    "cache": Flag("prompt cache file to read and fill"),
    "score": Flag("score each prompt with the alignment rewards", action="store_true"),
    "reward": Flag("weighted reward terms: critic, phrase, repetition"),
    "critic": Flag("critic VLM: folder, hub id or openai:URL,model=NAME"),
    "phrases": Flag("file of phrases the phrase reward penalises, one per line"),
    # eval
    "scales": Flag("powers of 4, comma-separated", parse=comma_ints),
    "modes": Flag("modes to compare, comma-separated", parse=comma_list),
    "metrics": Flag(
        "no-reference metrics: all, or some of niqe,musiq,maniqa,clipiqa,brisque,sharpness,entropy",
        parse=comma_list,
    ),
    "fidelity": Flag("skip the downscale-and-zoom-back fidelity runs", names=("--no-fidelity",), action="store_false"),
    "drift": Flag("skip drift across steps", names=("--no-drift",), action="store_false"),
    # align
    "steps": Flag("optimizer steps"),
    "group_size": Flag("prompts sampled per pair and compared"),
    "batch_size": Flag("pairs per step"),
    "lr": Flag("learning rate, constant"),
    "beta": Flag("KL weight to the base model (0 = none)"),
    "clip": Flag("PPO ratio clip epsilon"),
    "temperature": Flag("sampling temperature"),
    "max_new_tokens": Flag("prompt length in tokens (32 is the official)"),
    "save_every": Flag("checkpoint every N steps"),
    "centers": Flag("zoom centres per image: the centre, then random"),
    "gradient_checkpointing": Flag("less memory, about a third slower", action="store_true"),
    # train-backbone
    "base": Flag(
        "the diffusers folder (or hub id) to train on: SD3 medium, or SD 2.1-base for --variant sd21", metavar="DIR"
    ),
    "batch": Flag("training images per step"),
    "variant": Flag("sd3 (Chain-of-Zoom's backbone, for osediff-sd3) or sd21 (the original OSEDiff, for osediff-sd21)"),
    "lora_rank": Flag("rank of the transformer and VAE-encoder LoRAs"),
    "degradation": Flag("how inputs are made from the HR crops: realesrgan (second-order) or bicubic (clean x4)"),
    "schedule": Flag(
        "constant (--degradation throughout) or coarse-to-fine (realesrgan for the first 25/45 of the steps, "
        "then bicubic: the paper's 25K random + 20K 4x-specific steps, as read here)"
    ),
    "loss": Flag("weighted loss terms: mse, lpips, vsd (distribution matching against the frozen base)"),
    "vgg": Flag("torchvision's VGG16 weights file (vgg16-397923af.pth), for LPIPS", metavar="PATH"),
    "lpips_heads": Flag("LPIPS linear heads file (default: the lpips package's vgg.pth)", metavar="PATH"),
    "crop": Flag("side of the random HR crops in px (a multiple of 16)"),
    "captions": Flag("prompt per image: none (the empty prompt) or sidecar (IMAGE.txt beside each image)"),
    "subtract_shift": Flag(
        "encode as the official training script does (latent minus the VAE shift; its inference does not)",
        action="store_true",
    ),
    "checkpoint_every": Flag("write the official checkpoint files every N steps"),
    "preview": Flag("only write N sample LR/HR pairs to OUT/preview, then stop"),
    "resume": Flag("continue the run in --out from its last checkpoint", action="store_true"),
}

#: Namespace key of a runtime field: ``runtime.tile`` is stored as ``runtime__tile``.
RUNTIME_PREFIX = "runtime__"


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add a flag for every field of the config class ``cls`` (and of its runtime)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in dataclasses.fields(cls):
        if spec.name in skip:
            continue
        if hints[spec.name] is Runtime:
            group = groups.setdefault("runtime", parser.add_argument_group("runtime"))
            runtime_hints = typing.get_type_hints(Runtime)
            for inner in dataclasses.fields(Runtime):
                _add(group, inner.name, runtime_hints[inner.name], inner.default, RUNTIME_PREFIX + inner.name)
            continue
        _add(parser, spec.name, hints[spec.name], spec.default, spec.name)


def _add(parser: Any, name: str, hint: Any, default: Any, dest: str) -> None:
    flag = FLAGS[name]
    kwargs: dict[str, Any] = {"help": _with_default(flag, default), "default": argparse.SUPPRESS}
    if flag.action:
        kwargs["action"] = flag.action
    if not flag.action or flag.action == "extend":  # extend: repeated flags add up, so it takes values
        listed = typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,)
        kwargs["type"] = flag.parse or (comma_list if listed and not flag.nargs else _parse_type(hint))
        if flag.nargs:
            kwargs["nargs"] = flag.nargs
        if flag.metavar:
            kwargs["metavar"] = flag.metavar
        if flag.choices:
            kwargs["choices"] = flag.choices
    if flag.positional:
        parser.add_argument(dest, **kwargs)
    else:
        parser.add_argument(*(flag.names or (f"--{name.replace('_', '-')}",)), dest=dest, **kwargs)


def _with_default(flag: Flag, default: Any) -> str:
    shown = "" if flag.action or flag.positional or default in (None, dataclasses.MISSING, "") else default
    if isinstance(shown, tuple):
        shown = ",".join(map(str, shown))
    return f"{flag.help} (default {shown})" if shown != "" else flag.help


def _parse_type(hint: Any) -> Callable[[str], Any]:
    """The argparse type of a field: text where the field takes text, else its number type."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if typing.get_origin(hint) is tuple or any(m is str or typing.get_origin(m) is tuple for m in members):
        return str
    for kind in (int, float):
        if kind in members:
            return kind
    return str


def given(namespace: argparse.Namespace, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flags the user typed, as config keys (runtime flags under ``runtime``)."""
    values: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    for key, value in vars(namespace).items():
        if key in ignore:
            continue
        if key.startswith(RUNTIME_PREFIX):
            runtime[key.removeprefix(RUNTIME_PREFIX)] = value
        else:
            values[key] = value
    if runtime:
        values["runtime"] = runtime
    return values


def flag_name(option: str) -> str:
    """The flag that sets the config key ``option`` (a component's own option keeps its name)."""
    flag = FLAGS.get(option)
    if flag is None or flag.positional:
        return option
    return flag.names[0] if flag.names else f"--{option.replace('_', '-')}"
