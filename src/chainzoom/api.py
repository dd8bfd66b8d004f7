"""The Python API: a :class:`ChainZoom` pipeline that loads its models once, and ``zoom()``.

::

    cz = ChainZoom(backbone="realesrgan", prompter="null", runtime=Runtime(device="auto"))
    result = cz("photo.jpg", scale=256, center=(0.6, 0.4))           # a ZoomResult
    for state in cz.iter_zoom("photo.jpg", scale=64, out="runs/x"):   # streamed, written, resumable
        ...

Every option of the command line is a keyword here under the same name
(``--prompter-max-tokens`` is ``prompter_max_tokens``; ``--device`` and the other
runtime flags are fields of :class:`~chainzoom.runtime.Runtime`), checked by the same
:mod:`chainzoom.config` classes, so a bad value gets the same message in both.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainzoom.config import (
    BACKBONE_OPTION_FIELDS,
    EXECUTOR_FIELDS,
    PROMPTER_OPTION_FIELDS,
    FullConfig,
    ModelConfig,
    ZoomConfig,
)
from chainzoom.core.vocabulary import MODEL_MODES
from chainzoom.errors import OptionError
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from chainzoom.backbones.base import Backbone
    from chainzoom.core.geometry import ZoomPlan
    from chainzoom.core.states import ScaleState
    from chainzoom.io.images import ImageInput
    from chainzoom.pipeline.adaptive import AdaptivePolicy
    from chainzoom.prompts.base import Prompter
    from chainzoom.runs.progress import ZoomProgress

StateCallback = Callable[["ScaleState"], None]
TileCallback = Callable[[int, int, int], None]
#: A component's options, as the cache of built components keys them.
ComponentKey = tuple[str, tuple[tuple[str, Any], ...]]


@dataclass
class ZoomResult:
    """One zoom: every scale-state, the plan they follow, the models' records and timings.

    Iterating, indexing and ``len()`` act on :attr:`states`. ``config`` is the job's
    effective configuration: what ran (the device resolved, protocol-implied options set).
    """

    states: list[ScaleState]
    plan: ZoomPlan
    config: ZoomConfig
    backbone: dict[str, Any] | None
    prompter: dict[str, Any] | None
    #: seconds: ``prompt`` and ``backbone`` summed over the steps made now, ``total`` wall time.
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None

    def __iter__(self) -> Iterator[ScaleState]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> ScaleState:
        return self.states[index]


class ChainZoom:
    """A zoom pipeline: models loaded once and reused for every call; it holds no run state.

    ``backbone`` and ``prompter`` are registry specs (``"realesrgan"``, ``"fixed:a cat"``;
    ``None`` is the default, ``realesrgan`` and ``null``) or ready objects. ``options``
    are the other model options of :class:`~chainzoom.config.ModelConfig`
    (``color_fix``, ``prompter_model``...); they apply to components named by spec.
    Models load on first use, or on :meth:`load`. The runs themselves are the run driver's
    (:mod:`chainzoom.runs.driver`), so every front-end makes the same bytes.
    """

    def __init__(
        self,
        backbone: str | Backbone | None = None,
        prompter: str | Prompter | None = None,
        *,
        runtime: Runtime | None = None,
        **options: Any,
    ) -> None:
        given_backbone = None if isinstance(backbone, str) or backbone is None else backbone
        given_prompter = None if isinstance(prompter, str) or prompter is None else prompter
        # An object's options are its own: none of the spec options can reach it.
        if given_backbone is not None:
            _refuse_options(options, BACKBONE_OPTION_FIELDS, "backbone")
        if given_prompter is not None:
            _refuse_options(options, PROMPTER_OPTION_FIELDS, "prompter")
        self.config = ModelConfig(
            backbone=backbone if isinstance(backbone, str) else None,
            prompter=prompter if isinstance(prompter, str) else None,
            runtime=runtime or Runtime(),
            **options,
        )
        #: Components the caller passed as objects (a Ray worker gets these; it builds the others).
        self._given = (given_backbone, given_prompter)
        self._runtime: Runtime | None = None
        self._backbones: dict[ComponentKey, Backbone] = {}
        self._prompters: dict[ComponentKey, Prompter] = {}
        self._placed: set[ComponentKey] = set()

    @classmethod
    def from_config(cls, config: ModelConfig) -> ChainZoom:
        """The pipeline of a command's configuration (only its model part is used)."""
        return cls(**config.model_options())

    @property
    def runtime(self) -> Runtime:
        """The runtime on a real device (resolved once)."""
        if self._runtime is None:
            self._runtime = self.config.runtime.resolve()
        return self._runtime

    @property
    def backbone(self) -> Backbone:
        """The pipeline's own backbone (its config's)."""
        return self.backbone_for(self.config)

    @property
    def prompter(self) -> Prompter:
        """The pipeline's own prompter (its config's)."""
        return self.prompter_for(self.config)

    @property
    def objects(self) -> tuple[str | None, str | None]:
        """What a run's request records for components passed as objects: ``object:<id>``."""
        backbone, prompter = self._given
        return (
            f"object:{backbone.card().id}" if backbone is not None else None,
            f"object:{prompter.id}" if prompter is not None else None,
        )

    def backbone_for(self, config: ModelConfig) -> Backbone:
        """The backbone ``config`` names with its options (a job's may differ from the pipeline's own:
        protocol official's numerics), built once each; the object the caller passed, if any."""
        if self._given[0] is not None:
            return self._given[0]
        key = _key(config.backbone_spec, config.backbone_options())
        if key not in self._backbones:
            from chainzoom.pipeline.components import build_backbone

            self._backbones[key] = build_backbone(key[0], self.runtime, **dict(key[1]))
        return self._backbones[key]

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
        key = _key(config.backbone_spec, config.backbone_options())
        if key in self._placed:
            return
        from chainzoom.pipeline.components import share_device

        backbone = self.backbone_for(config)
        s = backbone.scale
        share_device(backbone, self.prompter_for(config), (plan.view[0] // s) * (plan.view[1] // s))
        self._placed.add(key)

    def load(self) -> ChainZoom:
        """Load both models now (a bad model file then fails before any work starts)."""
        _ = self.backbone, self.prompter
        return self

    def adaptive_policy(self, config: ZoomConfig) -> AdaptivePolicy | None:
        """A fresh adaptive policy over ``config``'s candidates (loaded once each), or ``None`` when fixed."""
        if config.policy != "adaptive":
            return None
        from chainzoom.metrics.niqe import score_niqe
        from chainzoom.pipeline.adaptive import AdaptivePolicy

        candidates = {spec: self.candidate(config, spec) for spec in config.candidate_backbones}
        return AdaptivePolicy(candidates, config.step_factors, score_niqe, "niqe", config.stop_below)

    def candidate(self, config: ModelConfig, spec: str) -> Backbone:
        """The backbone ``spec`` for the adaptive policy: ``config``'s own, or ``spec`` with no options."""
        if spec == config.backbone_spec:
            return self.backbone_for(config)
        return self.backbone_for(ModelConfig(backbone=spec, runtime=config.runtime))

    # ------------------------------------------------------------------ local zoom

    def job(self, image: ImageInput, **options: Any) -> ZoomConfig:
        """The checked configuration of one zoom of ``image`` with this pipeline's models.

        ``options`` are the fields of :class:`~chainzoom.config.ZoomConfig` that are not
        model options: ``scale``, ``center``, ``view``, ``mode``, ``protocol``, ``process_size``,
        ``consistency``, ``policy``..., ``max_pixels``, ``out``, ``overwrite``, ``animation``.
        One zoom runs in this process: the executor options belong to :meth:`zoom_batch` and
        :meth:`zoom_full`.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(ZoomConfig)}
        for name in EXECUTOR_FIELDS:
            if name in options and options[name] != defaults[name]:
                raise OptionError(name, "one zoom runs in this process; zoom_batch and zoom_full take executors")
        model = self.config.model_options()
        if options.get("mode", "chain") not in MODEL_MODES:
            model = {"runtime": self.config.runtime}  # a baseline of this pipeline uses none of its models
        job: dict[str, Any] = {
            k: str(v) if k == "out" else v for k, v in options.items() if v is not None or k != "out"
        }
        inputs = (str(image),) if isinstance(image, (str, Path)) else ()
        return ZoomConfig(**model, inputs=inputs, **job)

    def iter_zoom(self, image: ImageInput, scale: float = 256.0, **options: Any) -> Iterator[ScaleState]:
        """Yield every scale-state as it is made (state 0 first); see :meth:`__call__`."""
        from chainzoom.runs import driver

        config = self.job(image, scale=scale, **options)
        yield from driver.zoom_states(self, driver.prepare(self, image, config), options.get("out"))

    def __call__(
        self,
        image: ImageInput,
        scale: float = 256.0,
        center: tuple[float, float] | str = (0.5, 0.5),
        *,
        on_state: StateCallback | None = None,
        **options: Any,
    ) -> ZoomResult:
        """Zoom ``scale`` times into ``image`` around ``center`` and return a :class:`ZoomResult`.

        ``image`` is a path, a PIL image, a :class:`~chainzoom.io.images.LoadedImage` or a
        ``[3,H,W]`` float tensor in ``[0,1]``. ``center`` is in fractions of width and
        height (or ``"px:X,Y"``). With ``out=FOLDER`` the run folder of ``chainzoom zoom``
        is written as the states are made, and a second call continues a partial one.
        ``on_state(state)`` is called for each state as it is made.
        """
        from chainzoom.runs import driver
        from chainzoom.runs.executors import backbone_record

        started = time.perf_counter()
        config = self.job(image, scale=scale, center=center, **options)
        zoom = driver.prepare(self, image, config)
        out = Path(options["out"]) if options.get("out") is not None else None
        states = []
        for state in driver.zoom_states(self, zoom, out):
            states.append(state)
            if on_state is not None:
                on_state(state)
        timings = {
            "prompt": sum(s.seconds.get("prompt", 0.0) for s in states),
            "backbone": sum(s.seconds.get("backbone", 0.0) for s in states),
            "total": time.perf_counter() - started,
        }
        effective = zoom.job.zoom
        uses_model = effective.uses_models
        policy = zoom.policy
        return ZoomResult(
            states,
            policy.plan if policy is not None and policy.plan is not None else zoom.plan,
            effective,
            backbone_record(self.backbone_for(effective)) if uses_model else None,
            self.prompter_for(effective).settings() if uses_model else None,
            timings,
            out,
        )

    # ------------------------------------------------------------------ full image and batches

    def zoom_full(
        self,
        image: str | Path,
        out: str | Path,
        scale: float = 16.0,
        *,
        on_tile: TileCallback | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Super-resolve the whole image at every level into ``out``; return the run's manifest.

        ``options``: ``format`` (tiff, dzi, png), ``consistency``, ``max_pixels``, ``overwrite``,
        ``executor`` (``local`` or ``ray``), ``ray_address``, ``workers``.
        ``on_tile(level, done, total)`` reports progress.
        """
        from chainzoom.runs import driver

        config = FullConfig(**self.config.model_options(), inputs=(str(image),), out=str(out), scale=scale, **options)
        return driver.run_full(self, config, on_tile)

    def zoom_batch(
        self,
        inputs: str | Path | list[str | Path],
        out: str | Path,
        scale: float = 256.0,
        *,
        progress: ZoomProgress | None = None,
        **options: Any,
    ) -> list[Path]:
        """Zoom every image of ``inputs`` (files or folders) into its run folder; return the folders.

        One input writes into ``out``, several into ``out/<name>`` each, as ``chainzoom zoom``
        does. ``options`` are those of :meth:`__call__` plus ``executor`` (``local`` or
        ``ray``), ``ray_address`` and ``workers``: with Ray each image is a task on an actor.
        """
        from chainzoom.runs import driver

        names = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        model = self.config.model_options()
        if options.get("mode", "chain") not in MODEL_MODES:
            model = {"runtime": self.config.runtime}  # as __call__: a baseline uses none of the models
        config = ZoomConfig(**model, inputs=tuple(map(str, names)), out=str(out), scale=scale, **options)
        return driver.run_batch(self, config, progress)

    def worker_copy(self) -> ChainZoom:
        """This pipeline as a Ray actor receives it: the specs, plus only the objects the caller passed.

        Models built here from specs are not shipped: each worker builds its own, on its
        own device (``device="auto"`` resolves on the worker's machine).
        """
        copy = ChainZoom.__new__(ChainZoom)
        copy.config = self.config
        copy._given = self._given
        copy._runtime = None
        copy._backbones, copy._prompters, copy._placed = {}, {}, set()
        return copy


def _key(spec: str, options: dict[str, Any]) -> ComponentKey:
    return spec, tuple(sorted(options.items()))


def _same_but_context(loaded: ComponentKey, wanted: ComponentKey) -> bool:
    """Whether two prompters differ at most in their VLM context."""

    def strip(key: ComponentKey) -> ComponentKey:
        return key[0], tuple(item for item in key[1] if item[0] != "context")

    return strip(loaded) == strip(wanted)


def _refuse_options(options: dict[str, Any], fields: dict[str, str], component: str) -> None:
    """Refuse an option of a component passed as an object (it was built with its own)."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    for name in fields:
        if name in options and options[name] != defaults[name]:
            raise OptionError(
                name, f"sets an option of a {component} named by its spec, not of one passed as an object"
            )


def zoom(
    image: ImageInput,
    scale: float = 256.0,
    center: tuple[float, float] | str = (0.5, 0.5),
    backbone: str | Backbone | None = None,
    prompter: str | Prompter | None = None,
    *,
    runtime: Runtime | None = None,
    **options: Any,
) -> ZoomResult:
    """One call: build a :class:`ChainZoom` and zoom once (use the class to zoom many images).

    ``options`` are model options (``color_fix``, ``prompter_model``...) and zoom
    options (``mode``, ``view``, ``protocol``, ``out``...) alike.
    """
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    model = {k: v for k, v in options.items() if k in model_names}
    job = {k: v for k, v in options.items() if k not in model_names}
    if job.get("mode", "chain") not in MODEL_MODES and backbone is None and prompter is None:
        pipeline = ChainZoom(runtime=runtime, **model)
    else:
        pipeline = ChainZoom(backbone, prompter, runtime=runtime, **model)
    return pipeline(image, scale, center, **job)
