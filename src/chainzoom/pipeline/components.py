"""Build the two seams' components from specs: the registry's factory, then the tiler.

Every front-end (the API, eval, align's pair builder) builds its models here, so a
backbone runs the same way, tiled the same way, wherever it was named.
"""

from __future__ import annotations

from typing import Any

from chainzoom.backbones import BACKBONES
from chainzoom.backbones.base import Backbone, component_of
from chainzoom.memory import MemoryPlan, Placement, choose_plan
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


#: Working memory of a VLM prompt (two 512 px images, a few dozen new tokens): an estimate
#: for Qwen2.5-VL-3B, not a measurement (no GPU was lent to measure it).
VLM_WORKING_BYTES = 1 << 30


def share_device(backbone: Backbone, prompter: Prompter, input_pixels: int) -> MemoryPlan | None:
    """One placement for the SR backbone's groups and the VLM's, and the plan that moves them.

    Only a backbone with a placement (the one-step diffusion models) takes part; a VLM
    prompter then joins it, so that a plan can move one model to make room for the other.
    With ``--memory auto`` on a GPU the plan is chosen from the free memory for a step on
    ``input_pixels`` pixels; elsewhere the plan asked for (or the official efficient mode)
    stays. Returns the plan in effect, or ``None`` when nothing is placed.
    """
    inner = component_of(backbone)  # the model's own placement, through the tiler
    placement: Placement | None = getattr(inner, "residency", None)
    if placement is None:
        return None
    attach = getattr(prompter, "attach", None)
    if attach is not None and "vlm" not in placement.groups:
        attach(placement)
    if placement.automatic and placement.device.type == "cuda":
        import torch

        free = torch.cuda.mem_get_info(placement.device)[0]
        free += sum(placement.weight_bytes(group) for group in placement.resident)
        weights = {group: placement.weight_bytes(group) for group in placement.groups}
        per_pixel = BACKBONES.entry(inner.card().id).facts.bytes_per_input_pixel or 0
        placement.plan = choose_plan(weights, {"sr": per_pixel * input_pixels, "vlm": VLM_WORKING_BYTES}, free)
    return placement.plan
