"""The adaptive zoom policy (``--policy adaptive``): each step's backbone and factor chosen by a score.

The paper asks whether adaptive zoom policies help; this one is greedy and explainable.
At every step it tries each candidate backbone (``--backbones``) at each step factor
the backbone allows (``--factors``, e.g. 2 and 4: a magnification reached in more,
smaller steps when that scores better), scores every candidate output with a
no-reference score (NIQE, lower is better) and keeps the best; ties go to the larger
factor, then to the earlier candidate. It stops early, with the reason, when even the
best output scores no better than plain bicubic interpolation of the same crop by
``stop_below`` (the step adds no detail). Every decision, with every score it compared,
is kept on its state (``ScaleState.decision``) and in :attr:`AdaptivePolicy.decisions`.

A resumed run repeats the same decisions: the factors already chosen are read back from
the finished states' decisions, a recorded stop is taken as it was, and the rest is
decided again from the same pixels by the same deterministic models and score.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from chainzoom.backbones.base import Backbone
from chainzoom.core.geometry import ZoomPlan, plan_factors
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.errors import OptionError
from chainzoom.io.images import LoadedImage, quantize
from chainzoom.pipeline.consistency import make_consistent
from chainzoom.pipeline.steps import (
    ask_prompt,
    crop_step,
    fit_view,
    initial_state,
    make_state,
    step_alpha,
    step_sources,
)
from chainzoom.prompts.base import Prompter

#: Magnifications closer than this are the same (float products of factors).
_EPSILON = 1e-9


@dataclass
class AdaptivePolicy:
    """The candidates, the factors, the score, and what was decided.

    ``score(image)`` is a no-reference quality score of a ``[3,H,W]`` image, lower is
    better. ``stop_below``: the least improvement over bicubic a step must make (score
    points); ``None`` never stops early.
    """

    candidates: dict[str, Backbone]
    factors: tuple[float, ...]
    score: Callable[[torch.Tensor], float]
    score_name: str = "niqe"
    stop_below: float | None = 0.0
    decisions: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    plan: ZoomPlan | None = None
    #: The stop a previous run of this folder recorded (:meth:`resume_from`): reaching that
    #: step again stops there, without running every candidate once more.
    recorded_stop: dict[str, Any] | None = None

    def resume_from(self, record: dict[str, Any] | None) -> None:
        """Take the stop from a previous run's manifest ``policy`` record, if it stopped."""
        decisions = (record or {}).get("decisions") or []
        self.recorded_stop = decisions[-1] if decisions and decisions[-1].get("stopped") else None

    def record(self) -> dict[str, Any]:
        """The policy's settings and outcome, for the manifest."""
        return {
            "policy": "adaptive",
            "candidates": list(self.candidates),
            "factors": list(self.factors),
            "score": self.score_name,
            "stop_below": self.stop_below,
            "stopped": self.stopped,
            "decisions": self.decisions,
        }


def zoom_adaptive(
    image: LoadedImage,
    plan: ZoomPlan,
    policy: AdaptivePolicy,
    prompter: Prompter | None = None,
    done: Sequence[ScaleState] = (),
    consistency: str = "none",
) -> Iterator[ScaleState]:
    """Yield the states of an adaptive chain towards ``plan.scale`` around ``plan.center``.

    ``plan`` gives the input, the view, the centre and the target magnification; its
    steps are replaced by the ones the policy chooses (the final plan is left in
    ``policy.plan``).
    """
    states = list(done)
    if not states:
        states.append(initial_state(image, plan))
        yield states[0]
    factors = [float(s.decision["factor"]) for s in states[1:] if s.decision is not None]
    if len(factors) != len(states) - 1:
        raise OptionError("policy", "the run folder's states were not made by the adaptive policy; use --overwrite")
    policy.decisions = [s.decision for s in states[1:] if s.decision is not None]
    policy.stopped = None
    policy.plan = _replan(plan, factors)
    while plan.scale / math.prod(factors) > 1 + _EPSILON:
        stop = policy.recorded_stop
        if stop is not None and stop.get("step") == len(states):
            policy.stopped = stop["stopped"]
            policy.decisions.append(stop)
            return
        state = _decide(image, plan, policy, prompter, states, factors, consistency)
        if state is None:
            return
        states.append(state)
        factors.append(float(state.decision["factor"]))  # type: ignore[index]
        policy.decisions.append(state.decision)  # type: ignore[arg-type]
        policy.plan = _replan(plan, factors)
        yield state


def _replan(plan: ZoomPlan, factors: Sequence[float]) -> ZoomPlan:
    """``plan`` with the chosen factors as its steps (state 0 and the target kept)."""
    if not factors:
        return plan
    chosen = plan_factors(plan.input_size, factors, plan.center, plan.view, plan.scale)
    return dataclasses.replace(chosen, state0_box=plan.state0_box)


def candidate_factors(remaining: float, factors: Sequence[float]) -> list[float]:
    """The factors a step may take: those short of the target, and the rest of the way if a factor allows it."""
    chosen = [f for f in factors if f < remaining - _EPSILON]
    if remaining <= max(factors) + _EPSILON:
        chosen.append(remaining)
    return sorted(set(chosen))


def _decide(
    image: LoadedImage,
    plan: ZoomPlan,
    policy: AdaptivePolicy,
    prompter: Prompter | None,
    states: list[ScaleState],
    factors: list[float],
    consistency: str,
) -> ScaleState | None:
    """Try every (backbone, factor), keep the best; ``None`` (and ``policy.stopped``) when it adds no detail."""
    started = time.perf_counter()
    index = len(states)
    previous = states[-1]
    remaining = plan.scale / math.prod(factors)
    trials: list[tuple[float, float, int, str, Any]] = []
    scores: dict[str, float] = {}
    for factor in candidate_factors(remaining, policy.factors):
        try:
            trial = _replan(plan, [*factors, factor])
        except OptionError:
            continue  # a factor this small cannot fill the view from the input: not a choice here
        step = trial.steps[-1]
        source, _ = step_sources(image, previous, step)
        crop = crop_step(source, step)
        prompt, prompt_seconds = ask_prompt(prompter, index, previous.image, crop)
        bicubic = policy.score(quantize(resize(crop, plan.view, "bicubic"), image.bit_depth))
        for order, (name, backbone) in enumerate(policy.candidates.items()):
            if factor > backbone.scale + _EPSILON:
                continue
            backbone_started = time.perf_counter()
            upscaled = fit_view(backbone.upscale(crop, prompt or ""), plan.view)
            backbone_seconds = time.perf_counter() - backbone_started
            rgb = quantize(make_consistent(consistency, upscaled, crop, image.rgb, step.box), image.bit_depth)
            value = policy.score(rgb)
            scores[f"{name}@{factor:g}"] = round(value, 4)
            context = (trial, step, crop, rgb, prompt, prompt_seconds, backbone_seconds, bicubic)
            trials.append((value, -factor, order, name, context))
    if not trials:
        raise OptionError("factors", f"no candidate backbone can make a x{remaining:g} step from here")
    value, negative_factor, _, name, context = min(trials, key=lambda t: t[:3])
    trial, step, crop, rgb, prompt, prompt_seconds, backbone_seconds, bicubic = context
    gain = bicubic - value
    decision = {
        "step": index,
        "backbone": name,
        "factor": -negative_factor,
        "score": policy.score_name,
        "scores": scores,
        "bicubic": round(bicubic, 4),
        "gain": round(gain, 4),
    }
    if policy.stop_below is not None and gain < policy.stop_below:
        policy.stopped = (
            f"step {index}: the best candidate ({name}, {-negative_factor:g}x) scores {policy.score_name} "
            f"{value:.3f}, {gain:+.3f} against bicubic's {bicubic:.3f}: no more detail than interpolation "
            f"(stop_below {policy.stop_below:g})"
        )
        policy.decisions.append({**decision, "stopped": policy.stopped})
        return None
    alpha = step_alpha(step_sources(image, previous, step)[1], step, plan.view)
    state = make_state(index, trial, image.bit_depth, rgb, alpha, prompt, prompt_seconds, backbone_seconds, started)
    state.decision = decision
    return state
