"""Drift across steps: does each scale-state still agree with the one it was zoomed from?

A chain step only ever sees its input crop, so nothing stops errors from piling up
over the steps (the open question of error accumulation in the paper). Each state i
is brought back to the resolution of state i-1 (bicubic, antialiased) and compared
with the region of state i-1 it shows: PSNR says how much the content moved, the
ΔE of the mean Lab colours how much the colour drifted. Interpolation gives almost
no drift by construction, so it is the floor to read the chain against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.metrics.color import mean_color_shift
from chainzoom.metrics.fidelity import psnr


@dataclass(frozen=True)
class StepDrift:
    """Drift of the step that made a state of ``magnification`` from the one before."""

    magnification: float
    psnr: float
    delta_e: float


def as_array(image) -> np.ndarray:
    """A ``[3, H, W]`` tensor -> ``[H, W, 3]`` float array, the form every metric takes."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def step_drift(previous: ScaleState, state: ScaleState) -> StepDrift:
    """Compare ``state`` downscaled with the region of ``previous`` it shows, in ``previous``'s pixels."""
    region = state.box.relative_to(previous.box, previous.size)
    size = (max(1, round(region.width)), max(1, round(region.height)))
    ours = as_array(resize(state.image, size, "bicubic"))
    reference = as_array(resize(previous.image, size, "bicubic", region))
    return StepDrift(state.magnification, psnr(ours, reference), mean_color_shift(ours, reference))


def cumulative_delta_e(states: list[ScaleState]) -> list[tuple[float, float]]:
    """(magnification, ΔE of the mean Lab colour of each state vs state 0 at its box): drift compounded.

    Per-step drift can stay small while the colour walks away step after step; against
    state 0 (x0's region, interpolated to the state's size) the walk shows whole.
    """
    first = states[0]
    out = []
    for state in states[1:]:
        region = state.box.relative_to(first.box, first.size)
        reference = as_array(resize(first.image, state.size, "bicubic", region))
        out.append((state.magnification, mean_color_shift(as_array(state.image), reference)))
    return out


def chain_drift(states: list[ScaleState]) -> list[StepDrift]:
    """The drift of every step of a run, in order."""
    return [step_drift(previous, state) for previous, state in zip(states, states[1:])]
