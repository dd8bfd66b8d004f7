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
    from chainzoom.prompts.base import Prompter
    from chainzoom.runs.progress import ZoomProgress

StateCallback = Callable[["ScaleState"], None]
TileCallback = Callable[[int, int, int], None]


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
        from chainzoom.runs.models import ModelSet

        #: The models, built once per (spec, options) for every run (the run driver asks it).
        self.models = ModelSet(self.config, (given_backbone, given_prompter))

    @classmethod
    def from_config(cls, config: ModelConfig) -> ChainZoom:
        """The pipeline of a command's configuration (only its model part is used)."""
        return cls(**config.model_options())

    @property
    def runtime(self) -> Runtime:
        """The runtime on a real device (resolved once)."""
        return self.models.runtime

    @property
    def backbone(self) -> Backbone:
        """The pipeline's own backbone (its config's)."""
        return self.models.backbone_for(self.config)

    @property
    def prompter(self) -> Prompter:
        """The pipeline's own prompter (its config's)."""
        return self.models.prompter_for(self.config)

    def load(self) -> ChainZoom:
        """Load both models now (a bad model file then fails before any work starts)."""
        _ = self.backbone, self.prompter
        return self

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
        model = self._model_options(options.get("mode", "chain"))
        job: dict[str, Any] = {
            k: str(v) if k == "out" else v for k, v in options.items() if v is not None or k != "out"
        }
        inputs = (str(image),) if isinstance(image, (str, Path)) else ()
        return ZoomConfig(**model, inputs=inputs, **job)

    def _model_options(self, mode: str) -> dict[str, Any]:
        """This pipeline's model options for a zoom of ``mode``: none but the runtime for a baseline,
        which uses none of its models."""
        return self.config.model_options() if mode in MODEL_MODES else {"runtime": self.config.runtime}

    def iter_zoom(self, image: ImageInput, scale: float = 256.0, **options: Any) -> Iterator[ScaleState]:
        """Yield every scale-state as it is made (state 0 first); see :meth:`__call__`."""
        from chainzoom.runs import driver

        config = self.job(image, scale=scale, **options)
        out = options.get("out")
        yield from driver.zoom_states(self.models, driver.prepare(self.models, image, config, out), out)

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
        out = Path(options["out"]) if options.get("out") is not None else None
        zoom = driver.prepare(self.models, image, config, out)
        states = []
        for state in driver.zoom_states(self.models, zoom, out):
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
            backbone_record(self.models.backbone_for(effective)) if uses_model else None,
            self.models.prompter_for(effective).settings() if uses_model else None,
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
        return driver.run_full(self.models, config, on_tile)

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
        model = self._model_options(options.get("mode", "chain"))
        config = ZoomConfig(**model, inputs=tuple(map(str, names)), out=str(out), scale=scale, **options)
        return driver.run_batch(self.models, config, progress)


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
