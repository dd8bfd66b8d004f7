"""The models of a pipeline: built once per (spec, options), by config, for every run.

A :class:`ModelSet` is what the run driver (:mod:`chainzoom.runs.driver`) and the Ray
workers ask for models: ``backbone_for(config)`` and ``prompter_for(config)`` return the
component a job's config names with its options, building each distinct one once. A job's
options can differ from the pipeline's own (protocol official implies the official numerics;
eval's context rows show the VLM another context), so models are keyed by what they are,
not held as "the" backbone. Components the caller passed as objects are returned as they
are, whatever the config says (their options were refused when they were given).

The set holds models and nothing of any run, so a run never depends on the runs before it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from chainzoom.config import ModelConfig, ZoomConfig
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from chainzoom.backbones.base import Backbone
    from chainzoom.core.geometry import ZoomPlan
    from chainzoom.pipeline.adaptive import AdaptivePolicy
    from chainzoom.prompts.base import Prompter

#: A component's spec and options, as the set keys what it built.
ComponentKey = tuple[str, tuple[tuple[str, Any], ...]]


class ModelSet:
    """The models of ``config`` and of the jobs run with it, loaded on first use.

    ``given`` are a backbone and a prompter the caller passed as objects (``None`` for
    those named by the config's specs).
    """

    def __init__(self, config: ModelConfig, given: tuple[Backbone | None, Prompter | None] = (None, None)) -> None:
        self.config = config
        self._given = given
        self._runtime: Runtime | None = None
        self._backbones: dict[ComponentKey, Backbone] = {}
        self._prompters: dict[ComponentKey, Prompter] = {}
        self._placed: set[ComponentKey] = set()

    @property
    def runtime(self) -> Runtime:
        """The runtime on a real device (resolved once, where the set is used)."""
        if self._runtime is None:
            self._runtime = self.config.runtime.resolve()
        return self._runtime

    @property
    def objects(self) -> tuple[str | None, str | None]:
        """What a run's request records for components passed as objects: ``object:<id>``."""
        backbone, prompter = self._given
        return (
            f"object:{backbone.card().id}" if backbone is not None else None,
            f"object:{prompter.id}" if prompter is not None else None,
        )

    def backbone_for(self, config: ModelConfig) -> Backbone:
        """The backbone ``config`` names with its options and precision (a job's may differ from the
        pipeline's own: protocol official's numerics, a resumed run's recorded dtype), built once
        each; the object the caller passed, if any."""
        if self._given[0] is not None:
            return self._given[0]
        key = self._backbone_key(config)
        if key not in self._backbones:
            from chainzoom.pipeline.components import build_backbone

            runtime = dataclasses.replace(self.runtime, dtype=dict(key[1])["dtype"])
            self._backbones[key] = build_backbone(config.backbone_spec, runtime, **config.backbone_options())
        return self._backbones[key]

    def _backbone_key(self, config: ModelConfig) -> ComponentKey:
        """What identifies ``config``'s backbone: spec, options and the precision it runs in."""
        from chainzoom.backbones import BACKBONES

        asked = dataclasses.replace(self.runtime, dtype=config.runtime.dtype)
        dtype = BACKBONES.dtype_for(config.backbone_spec, asked)
        return _key(config.backbone_spec, {**config.backbone_options(), "dtype": dtype})

    def prompter_for(self, config: ModelConfig) -> Prompter:
        """The prompter ``config`` names with its options, built once each; a VLM that differs from
        one already loaded only in its context shares that one's model (eval's context rows)."""
        if self._given[1] is not None:
            return self._given[1]
        options = config.prompter_options()
        key = _key(config.prompter_spec, options)
        if key not in self._prompters:
            sibling = next((p for k, p in self._prompters.items() if _same_but_context(k, key)), None)
            with_context = getattr(sibling, "with_context", None)
            if "context" in options and with_context is not None:
                self._prompters[key] = with_context(options["context"])
            else:
                from chainzoom.pipeline.components import build_prompter

                self._prompters[key] = build_prompter(key[0], self.runtime, **options)
        return self._prompters[key]

    def caches_prompts(self, config: ModelConfig) -> bool:
        """Whether run folders keep ``config``'s prompts (a prompter that costs a model call, named by spec)."""
        if self._given[1] is not None:
            return False
        from chainzoom.pipeline.components import prompter_uses_model

        return prompter_uses_model(self.prompter_for(config))

    def step_factor(self, config: ModelConfig | None = None) -> int:
        """The backbone's scale: from the registry's facts when they know it, else from the model."""
        config = config or self.config
        if self._given[0] is None:
            from chainzoom.backbones import BACKBONES

            scale = BACKBONES.entry(config.backbone_spec).facts.scale
            if scale is not None:
                return scale
        return self.backbone_for(config).scale

    def place(self, config: ModelConfig, plan: ZoomPlan) -> None:
        """Put ``config``'s backbone and VLM weights under one memory plan (``--memory``), once."""
        key = self._backbone_key(config)
        if key in self._placed:
            return
        from chainzoom.pipeline.components import share_device

        backbone = self.backbone_for(config)
        s = backbone.scale
        share_device(backbone, self.prompter_for(config), (plan.view[0] // s) * (plan.view[1] // s))
        self._placed.add(key)

    def adaptive_policy(self, config: ZoomConfig) -> AdaptivePolicy | None:
        """A fresh adaptive policy over ``config``'s candidates (loaded once each), or ``None`` when fixed."""
        if config.policy != "adaptive":
            return None
        from chainzoom.metrics.niqe import score_niqe
        from chainzoom.pipeline.adaptive import AdaptivePolicy

        candidates = {spec: self.candidate(config, spec) for spec in config.candidate_backbones}
        return AdaptivePolicy(candidates, config.step_factors, score_niqe, "niqe", config.stop_below)

    def candidate(self, config: ModelConfig, spec: str) -> Backbone:
        """The backbone ``spec`` for the adaptive policy: ``config``'s own, or ``spec`` with no options,
        in ``config``'s precision where it runs in it, else in its own ``auto`` one."""
        if spec == config.backbone_spec:
            return self.backbone_for(config)
        from chainzoom.backbones import BACKBONES

        return self.backbone_for(ModelConfig(backbone=spec, runtime=BACKBONES.runtime_for(spec, config.runtime)))

    def worker_copy(self) -> ModelSet:
        """This model set as a Ray actor receives it: the config, plus only the objects the caller passed.

        Models built here from specs are not shipped: each worker builds its own, on its
        own device (``device="auto"`` resolves on the worker's machine).
        """
        return ModelSet(self.config, self._given)


def _key(spec: str, options: dict[str, Any]) -> ComponentKey:
    return spec, tuple(sorted(options.items()))


def _same_but_context(loaded: ComponentKey, wanted: ComponentKey) -> bool:
    """Whether two prompters differ at most in their VLM context."""

    def strip(key: ComponentKey) -> ComponentKey:
        return key[0], tuple(item for item in key[1] if item[0] != "context")

    return strip(loaded) == strip(wanted)
