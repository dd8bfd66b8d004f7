"""The scale-autoregressive loop, and the baselines it is compared with.

:func:`zoom_chain` knows protocols only (a :class:`Backbone`, a :class:`Prompter`)
and executes a :class:`ZoomPlan` made by :func:`chainzoom.core.geometry.plan_zoom`: each
step crops its source (the full-resolution input for step 1, the previous state
after that), asks the prompter for a prompt from the last two states, upscales the
crop with the backbone and, for a fractional last step, resamples to the view.

Every state is quantized to the bit depth it will be saved at before the next step
reads it, exactly as if it had been written to disk and read back (the official
code re-reads each step's PNG). So a run resumed from the saved PNGs is
bit-identical to an uninterrupted one.

The baselines (:data:`MODES`) make the same states, at the same boxes, directly
from the input: ``direct`` runs the backbone once on the input region of each
state and interpolates the rest of the way; ``onestep`` (the official "one-step
direct SR") interpolates the region first, to a quarter of the view, and runs the
backbone once last; ``bicubic`` and ``nearest`` only interpolate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

from chainzoom.backbones.base import Backbone
from chainzoom.core.geometry import Box, ZoomPlan
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.core.vocabulary import MODES
from chainzoom.errors import OptionError
from chainzoom.io.images import LoadedImage
from chainzoom.pipeline.adaptive import AdaptivePolicy, zoom_adaptive
from chainzoom.pipeline.consistency import check_method, make_consistent
from chainzoom.pipeline.official import official_states
from chainzoom.pipeline.steps import (
    ALPHA_METHOD,
    ask_prompt,
    crop_box,
    crop_step,
    fit_view,
    initial_state,
    make_state,
    step_alpha,
    step_sources,
)
from chainzoom.prompts.base import Prompter

#: Input pixels of context kept around the region that ``direct`` mode feeds the
#: backbone, so the region's border is not the model's border.
DIRECT_MARGIN = 2


def zoom_chain(
    image: LoadedImage,
    plan: ZoomPlan,
    backbone: Backbone,
    prompter: Prompter | None = None,
    done: Sequence[ScaleState] = (),
    consistency: str = "none",
) -> Iterator[ScaleState]:
    """Yield the scale-states of a local zoom chain, continuing after ``done``.

    ``done`` holds states already made (loaded back from a previous run); the chain
    yields only the missing ones. State 0 is yielded too when ``done`` is empty.
    ``consistency`` corrects each step's output against its input
    (:mod:`chainzoom.pipeline.consistency`).
    """
    check_method(consistency)
    states = list(done)
    if not states:
        states.append(initial_state(image, plan))
        yield states[0]
    for step in plan.steps[len(states) - 1 :]:
        previous = states[-1]
        source, source_alpha = step_sources(image, previous, step)
        started = time.perf_counter()
        crop = crop_step(source, step)
        prompt, prompt_seconds = ask_prompt(prompter, step.index, previous.image, crop)
        backbone_started = time.perf_counter()
        upscaled = backbone.upscale(crop, prompt or "")
        backbone_seconds = time.perf_counter() - backbone_started
        rgb = make_consistent(consistency, fit_view(upscaled, plan.view), crop, image.rgb, step.box)
        alpha = step_alpha(source_alpha, step, plan.view)
        state = make_state(
            step.index, plan, image.bit_depth, rgb, alpha, prompt, prompt_seconds, backbone_seconds, started
        )
        states.append(state)
        yield state


def zoom_baseline(
    mode: str,
    image: LoadedImage,
    plan: ZoomPlan,
    backbone: Backbone | None = None,
    prompter: Prompter | None = None,
    done: Sequence[ScaleState] = (),
) -> Iterator[ScaleState]:
    """Yield the states of a baseline ``mode`` at the chain's boxes, each made from the input."""
    if mode not in MODES or mode == "chain":
        raise ValueError(f"not a baseline mode: {mode!r}")
    state0 = done[0] if done else initial_state(image, plan)
    if not done:
        yield state0
    for step in plan.steps[max(len(done), 1) - 1 :]:
        started = time.perf_counter()
        prompt, prompt_seconds, backbone_seconds = None, 0.0, 0.0
        if mode == "direct":
            assert backbone is not None, "direct mode needs a backbone"
            region, inner = _padded_region(step.box, image.size)
            crop = crop_box(image.rgb, region)
            prompt, prompt_seconds = ask_prompt(prompter, step.index, state0.image, crop)
            backbone_started = time.perf_counter()
            upscaled = backbone.upscale(crop, prompt or "")
            backbone_seconds = time.perf_counter() - backbone_started
            s = backbone.scale
            rgb = resize(upscaled, plan.view, "bicubic", Box(*(v * s for v in inner.as_list())))
        elif mode == "onestep":
            # the official one-step baseline: the region interpolated to the backbone's input
            # size for the view, then the backbone once (at x4**k, bicubic does 4**(k-1) of it)
            assert backbone is not None, "onestep mode needs a backbone"
            s = backbone.scale
            small = resize(image.rgb, (plan.view[0] // s, plan.view[1] // s), "bicubic", step.box)
            prompt, prompt_seconds = ask_prompt(prompter, step.index, state0.image, small)
            backbone_started = time.perf_counter()
            upscaled = backbone.upscale(small, prompt or "")
            backbone_seconds = time.perf_counter() - backbone_started
            rgb = fit_view(upscaled, plan.view)
        else:
            rgb = resize(image.rgb, plan.view, mode, step.box)
        alpha = resize(image.alpha, plan.view, ALPHA_METHOD, step.box) if image.alpha is not None else None
        yield make_state(
            step.index, plan, image.bit_depth, rgb, alpha, prompt, prompt_seconds, backbone_seconds, started
        )


def _padded_region(box: Box, size: tuple[int, int]) -> tuple[Box, Box]:
    """The whole-pixel region around ``box`` (with a margin) and ``box`` inside it."""
    x0 = max(math.floor(box.x0) - DIRECT_MARGIN, 0)
    y0 = max(math.floor(box.y0) - DIRECT_MARGIN, 0)
    x1 = min(math.ceil(box.x1) + DIRECT_MARGIN, size[0])
    y1 = min(math.ceil(box.y1) + DIRECT_MARGIN, size[1])
    region = Box(x0, y0, x1, y1)
    return region, Box(box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)


def run_states(
    mode: str,
    image: LoadedImage,
    plan: ZoomPlan,
    backbone: Backbone | None,
    prompter: Prompter | None,
    done: Sequence[ScaleState] = (),
    consistency: str = "none",
    protocol: str = "chainzoom",
    policy: AdaptivePolicy | None = None,
) -> Iterator[ScaleState]:
    """The state iterator for ``mode`` (see :data:`chainzoom.core.vocabulary.MODES`), after ``done``.

    ``protocol="official"`` runs the official implementation's arithmetic instead
    (:mod:`chainzoom.pipeline.official`; ``image`` and ``plan`` are then its square's).
    A ``policy`` chooses the chain's backbone and factor per step
    (:mod:`chainzoom.pipeline.adaptive`).
    """
    if mode not in MODES:
        raise OptionError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if policy is not None:
        if mode != "chain" or protocol != "chainzoom":
            raise OptionError("policy", "adaptive applies to mode chain under protocol chainzoom")
        return zoom_adaptive(image, plan, policy, prompter, done, consistency)
    if protocol == "official":
        if mode == "direct":
            raise OptionError("mode", "direct is chainzoom's baseline; the official protocol has onestep")
        if consistency != "none":
            raise OptionError("consistency", "does not apply to protocol official (its colour fix is --color-fix)")
        return official_states(mode, image, plan, backbone, prompter, done)
    if mode == "chain":
        if backbone is None:
            raise OptionError("backbone", "the chain needs a backbone")
        return zoom_chain(image, plan, backbone, prompter, done, consistency)
    if consistency != "none":
        raise OptionError("consistency", "applies to mode chain only")
    return zoom_baseline(mode, image, plan, backbone, prompter, done)
