"""What every chain step does, whoever decides the step: crop, prompt, fit the view, make the state.

The fixed chain (:mod:`chainzoom.pipeline.chain`) and the adaptive policy
(:mod:`chainzoom.pipeline.adaptive`) both build their states with these, so a state
means the same whichever made it.
"""

from __future__ import annotations

import time

import torch

from chainzoom.core.geometry import Box, StepPlan, ZoomPlan
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.io.images import LoadedImage, quantize
from chainzoom.prompts.base import PromptContext, Prompter

ALPHA_METHOD = "bicubic"


def initial_state(image: LoadedImage, plan: ZoomPlan) -> ScaleState:
    """State 0: the input's view-sized picture (the input itself when it fits)."""
    box = plan.state0_box
    same = (box.width, box.height) == plan.view and box.x0.is_integer() and box.y0.is_integer()
    rgb = crop_box(image.rgb, box) if same else resize(image.rgb, plan.view, "bicubic", box)
    alpha = None
    if image.alpha is not None:
        alpha = crop_box(image.alpha, box) if same else resize(image.alpha, plan.view, ALPHA_METHOD, box)
        alpha = quantize(alpha, image.bit_depth)
    return ScaleState(0, quantize(rgb, image.bit_depth), box, plan.magnification(0), None, alpha)


def make_state(
    index: int,
    plan: ZoomPlan,
    bit_depth: int,
    rgb: torch.Tensor,
    alpha: torch.Tensor | None,
    prompt: str | None,
    prompt_seconds: float,
    backbone_seconds: float,
    started: float,
) -> ScaleState:
    """A finished state, quantized as it will be saved, with its timings."""
    return ScaleState(
        index,
        quantize(rgb, bit_depth),
        plan.box(index),
        plan.magnification(index),
        prompt,
        quantize(alpha, bit_depth) if alpha is not None else None,
        {"prompt": prompt_seconds, "backbone": backbone_seconds, "total": time.perf_counter() - started},
    )


def ask_prompt(
    prompter: Prompter | None, step: int, wide: torch.Tensor, crop: torch.Tensor
) -> tuple[str | None, float]:
    """Ask the prompter about the crop, shown at the wide state's size as the paper does."""
    if prompter is None:
        return None, 0.0
    started = time.perf_counter()
    view = resize(crop, (wide.shape[-1], wide.shape[-2]), "bicubic")
    text = prompter.describe(PromptContext(step, wide, view))
    return text, time.perf_counter() - started


def crop_step(source: torch.Tensor, step: StepPlan) -> torch.Tensor:
    c = step.crop
    return source[:, c.top : c.top + c.height, c.left : c.left + c.width].contiguous()


def crop_box(image: torch.Tensor, box: Box) -> torch.Tensor:
    x0, y0, x1, y1 = (int(v) for v in box.as_list())
    return image[:, y0:y1, x0:x1].contiguous()


def fit_view(image: torch.Tensor, view: tuple[int, int]) -> torch.Tensor:
    """A fractional last step upscales past the view; bring it back with antialiasing."""
    if (image.shape[-1], image.shape[-2]) == view:
        return image
    return resize(image, view, "bicubic")


def step_sources(image: LoadedImage, previous: ScaleState, step: StepPlan) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a step crops, RGB and alpha: the full-resolution input for step 1, the previous state after it."""
    return (image.rgb, image.alpha) if step.source == "input" else (previous.image, previous.alpha)


def step_alpha(source_alpha: torch.Tensor | None, step: StepPlan, view: tuple[int, int]) -> torch.Tensor | None:
    """The step's alpha: its crop of the source's alpha resized to the view (``None`` without one)."""
    return None if source_alpha is None else resize(crop_step(source_alpha, step), view, ALPHA_METHOD)
