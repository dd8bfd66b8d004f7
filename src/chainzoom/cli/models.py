"""``chainzoom models``: every backbone and prompter with its facts, read from the registries.

Listing imports no torch and loads no weights; ``--verbose`` loads each backbone that
needs no file and adds its parameter count and weights' hash.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from chainzoom.registry import BackboneEntry, Entry, PrompterEntry, Registry


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("models", help="list registered backbones and prompters with their facts")
    parser.add_argument("--verbose", "-v", action="store_true", help="also load each backbone and count parameters")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from chainzoom.backbones import BACKBONES
    from chainzoom.prompts import PROMPTERS

    print("Backbones (--backbone):")
    for backbone in BACKBONES:
        print(describe_backbone(backbone))
    _problems(BACKBONES)
    print("\nPrompters (--prompter):")
    for prompter in PROMPTERS:
        print(describe_prompter(prompter))
    _problems(PROMPTERS)
    if args.verbose:
        print_auto_dtypes(BACKBONES)
        print_loaded_cards(BACKBONES)
    return 0


def print_auto_dtypes(registry: Registry[Any, Any]) -> None:
    """What ``--dtype auto`` picks for each backbone on this machine's CPU, and why (no torch)."""
    from chainzoom.runtime import NATIVE_BF16_FLAGS, auto_dtype, cpu_flags

    found = sorted(flag for flag in NATIVE_BF16_FLAGS if flag in cpu_flags())
    print(f"\n--dtype auto on this CPU (native bf16 flags: {', '.join(found) or 'none'}):")
    for entry in registry:
        dtype, why = auto_dtype("cpu", entry.facts.dtypes, entry.facts.cpu_bf16)
        print(f"  {entry.name}: {dtype} ({why})")


def describe_backbone(entry: BackboneEntry) -> str:
    facts = entry.facts
    lines = [f"  {entry.usage()}", f"      {entry.description}"]
    scale = f"x{facts.scale}" if facts.scale else "the model file's scale"
    line = (
        f"      {scale}; reads the prompt: {'yes' if facts.text_aware else 'no'}; engines: {', '.join(facts.engines)}"
    )
    lines.append(f"{line}; dtypes: {', '.join(facts.dtypes)}")
    if facts.options:
        lines.append(f"      options: {', '.join(facts.options)}")
    lines.append(f"      licence: {facts.licence or 'n/a'}{_install(entry)}")
    return "\n".join(lines)


def describe_prompter(entry: PrompterEntry) -> str:
    facts = entry.facts
    lines = [f"  {entry.usage()}", f"      {entry.description}"]
    if facts.options:
        lines.append(f"      options: {', '.join(facts.options)}")
    lines.append(f"      uses a model: {'yes (answers cached in the run folder)' if facts.uses_model else 'no'}")
    if facts.licence or entry.extra:
        lines.append(f"      licence: {facts.licence or 'n/a'}{_install(entry)}")
    return "\n".join(lines)


def _install(entry: Entry) -> str:
    """Where the entry's optional packages are missing, how to install them (found without importing)."""
    if entry.extra is None:
        return ""
    module = entry.factory.split(":")[0]
    family = {
        "spandrel": "spandrel",
        "diffusion": "diffusers",
        "vlm": "transformers",
        "labels": "efficientnet_lite_pytorch",
    }
    needed = family.get(entry.extra, module)
    present = importlib.util.find_spec(needed) is not None
    return f"; extra [{entry.extra}]" + ("" if present else f" (not installed: pip install 'chainzoom[{entry.extra}]')")


def _problems(registry: Registry[Any, Any]) -> None:
    for name, problem in registry.plugin_problems.items():
        print(f"  {name}: unavailable plugin ({problem})")


def print_loaded_cards(registry: Registry[Any, BackboneEntry]) -> None:
    """Load every backbone that needs no argument and show its card; the others need a file."""
    from chainzoom.errors import ChainZoomError
    from chainzoom.runtime import Runtime

    print("\nLoaded backbone cards:")
    for entry in registry:
        if entry.required:
            print(f"  {entry.name}: needs an argument ({entry.usage()})")
            continue
        try:
            card = registry.create(entry.name, Runtime(device="cpu")).card()
        except ChainZoomError as exc:
            print(f"  {entry.name}: unavailable ({exc})")
            continue
        params = f"{card.parameters:,}" if card.parameters is not None else "?"
        print(f"  {card.id}: x{card.scale}, {card.architecture}, {params} parameters")
        if card.source:
            print(f"      source: {card.source}")
        if card.weights_sha256:
            print(f"      weights sha256: {card.weights_sha256}")
