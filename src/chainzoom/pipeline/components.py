"""Build the two seams' components from specs: the registry's factory, then the tiler.

Every front-end (the API, eval, align's pair builder) builds its models here, so a
backbone runs the same way, tiled the same way, wherever it was named.
"""

from __future__ import annotations

from typing import Any

from chainzoom.backbones import BACKBONES
from chainzoom.backbones.base import Backbone
from chainzoom.pipeline.tiling import TiledBackbone
from chainzoom.prompts import PROMPTERS
from chainzoom.prompts.base import Prompter
from chainzoom.runtime import Runtime


def build_backbone(spec: str, runtime: Runtime, **options: Any) -> Backbone:
    """The backbone ``spec`` names, with ``options``, tiled as ``runtime`` says.

    The tiler budgets memory with the backbone's own working bytes per input pixel
    (a registry fact), so an SD3 step is not tiled as if it were RRDBNet.
    """
    runtime = runtime if runtime.resolved else runtime.resolve()
    inner = BACKBONES.create(spec, runtime, **options)  # checks spec and options against the facts
    facts = BACKBONES.entry(spec).facts
    return TiledBackbone(
        inner, runtime.tile, runtime.overlap, runtime.device, bytes_per_pixel=facts.bytes_per_input_pixel
    )


def build_prompter(spec: str, runtime: Runtime, **options: Any) -> Prompter:
    """The prompter ``spec`` names, with ``options``."""
    return PROMPTERS.create(spec, runtime if runtime.resolved else runtime.resolve(), **options)


def prompter_uses_model(prompter: Prompter) -> bool:
    """Whether the prompter's answers cost a model call (then run folders cache them)."""
    entry = PROMPTERS.entries.get(prompter.id)
    return entry.facts.uses_model if entry is not None else True
