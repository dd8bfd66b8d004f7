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

from chainzoom.runtime import Runtime


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


FLAGS: dict[str, Flag] = {
    # inputs and outputs
    "inputs": Flag("image files or folders of images", positional=True, nargs="*", metavar="INPUT"),
    "input": Flag("an image file", positional=True, nargs="?", metavar="INPUT"),
    "images": Flag("image files or folders", nargs="+", metavar="PATH"),
    "out": Flag("output folder"),
    "overwrite": Flag("replace a finished or different run in --out", action="store_true"),
    "quiet": Flag("no progress bars", names=("--quiet", "-q"), action="store_true"),
    "animation": Flag("skip zoom.webp", names=("--no-animation",), action="store_false"),
    "max_pixels": Flag("refuse inputs with more pixels than this (default 200 MP)"),
    # the zoom
    "scale": Flag("total magnification relative to the input's pixels, any value > 1"),
    "center": Flag("zoom point: 'X,Y' fractions of width/height, or 'px:X,Y' pixels"),
    "view": Flag("size of every state: N (long side) or WxH; default: the input size up to 1024 px, else 512"),
    "mode": Flag(
        "chain (Chain-of-Zoom), direct (backbone once, then bicubic), onestep (the official baseline: "
        "bicubic, then the backbone once), bicubic or nearest"
    ),
    "consistency": Flag(
        "after each chain step: none, wavelet/adain (colours of the step's input), backprojection "
        "(downscaled output = the step's input), anchor (colours of the input image's region); "
        "eval: comma-separated, the chain once per method"
    ),
    "square": Flag(
        "official preprocessing: centred square resized to 512x512 (for comparisons with the paper)",
        action="store_true",
    ),
    "format": Flag(
        "--full output per level: tiff (pyramidal BigTIFF), dzi (Deep Zoom), png (only when a level fits in memory)"
    ),
    # models
    "backbone": Flag("backbone spec (see `chainzoom models`); default realesrgan"),
    "efficient_memory": Flag(
        "diffusion backbones: the official 24 GB mode, components on the GPU only while they run",
        action="store_true",
    ),
    "color_fix": Flag(
        "diffusion backbones: keep the view's colours (wavelet, adain, none; default: the backbone's choice)"
    ),
    "prompter": Flag('null (default), fixed:"text", vlm[:ID_OR_FOLDER], openai:URL,model=NAME, labels'),
    "prompter_model": Flag("model name for openai / vlm"),
    "prompter_adapter": Flag("LoRA adapter folder for vlm (e.g. a GRPO one)"),
    "prompter_max_tokens": Flag("longest prompt in tokens"),
    "prompter_sample": Flag("sample (seeded by --seed) instead of greedy", action="store_true"),
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
    "dtype": Flag("model precision (half precision only on GPUs)"),
    "threads": Flag("CPU threads for torch (default: torch's)"),
    "seed": Flag("seed for every random choice"),
    "engine": Flag(
        "how the backbone runs: torch, compile (torch.compile: slow start, faster steps) or ncnn (bundled models)",
        names=("--engine", "--runtime"),
    ),
    "tile": Flag("upscale in tiles of N input px (default: chosen from free memory)"),
    "tile_overlap": Flag("input px shared by neighbouring tiles (default 160, or half a smaller tile)"),
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
    "policy": Flag("prompt VLM to align: folder or hub id"),
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
    else:
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
