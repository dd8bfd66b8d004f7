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
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainzoom.config import ExecutorConfig, FullConfig, ModelConfig, ZoomConfig, identity
from chainzoom.core.vocabulary import MODEL_MODES
from chainzoom.errors import OptionError
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from chainzoom.backbones.base import Backbone
    from chainzoom.core.geometry import ZoomPlan
    from chainzoom.core.states import ScaleState
    from chainzoom.io.images import LoadedImage
    from chainzoom.pipeline.adaptive import AdaptivePolicy
    from chainzoom.prompts.base import Prompter
    from chainzoom.runs.local import StateMaker
    from chainzoom.runs.progress import ZoomProgress
    from chainzoom.runs.ray_executor import RayExecutor

    ImageInput = str | Path | Image.Image | LoadedImage | torch.Tensor

StateCallback = Callable[["ScaleState"], None]
TileCallback = Callable[[int, int, int], None]


@dataclass
class ZoomResult:
    """One zoom: every scale-state, the plan they follow, the models' records and timings.

    Iterating, indexing and ``len()`` act on :attr:`states`.
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
    """A zoom pipeline: one backbone and one prompter, loaded once and reused for every call.

    ``backbone`` and ``prompter`` are registry specs (``"realesrgan"``, ``"fixed:a cat"``;
    ``None`` is the default, ``realesrgan`` and ``null``) or ready objects. ``options``
    are the other model options of :class:`~chainzoom.config.ModelConfig`
    (``color_fix``, ``prompter_model``...). Models load on first use, or on :meth:`load`.
    """

    def __init__(
        self,
        backbone: str | Backbone | None = None,
        prompter: str | Prompter | None = None,
        *,
        runtime: Runtime | None = None,
        **options: Any,
    ) -> None:
        self._backbone: Backbone | None = None if isinstance(backbone, str) or backbone is None else backbone
        self._prompter: Prompter | None = None if isinstance(prompter, str) or prompter is None else prompter
        if self._backbone is not None and options.keys() & {"efficient_memory", "color_fix"}:
            raise OptionError("backbone", "options such as color_fix need a backbone named by its spec")
        self.config = ModelConfig(
            backbone=backbone if isinstance(backbone, str) else None,
            prompter=prompter if isinstance(prompter, str) else None,
            runtime=runtime or Runtime(),
            **options,
        )
        self._runtime: Runtime | None = None
        self._placed = False
        self._candidates: dict[str, Backbone] = {}
        self._cache_prompts: bool | None = None if self._prompter is None else False
        #: Components the caller passed as objects (a Ray worker gets these; it builds the others).
        self._given = (self._backbone, self._prompter)

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
        if self._backbone is None:
            from chainzoom.pipeline.components import build_backbone

            self._backbone = build_backbone(self.config.backbone_spec, self.runtime, **self.config.backbone_options())
        return self._backbone

    @property
    def prompter(self) -> Prompter:
        if self._prompter is None:
            from chainzoom.pipeline.components import build_prompter, prompter_uses_model

            self._prompter = build_prompter(self.config.prompter_spec, self.runtime, **self.config.prompter_options())
            self._cache_prompts = prompter_uses_model(self._prompter)
        return self._prompter

    def step_factor(self) -> int:
        """The backbone's scale: from the registry's facts when they know it, else from the model."""
        if self._backbone is None:
            from chainzoom.backbones import BACKBONES

            scale = BACKBONES.entry(self.config.backbone_spec).facts.scale
            if scale is not None:
                return scale
        return self.backbone.scale

    def place(self, plan: ZoomPlan) -> None:
        """Put the backbone's and the VLM's weights under one memory plan (``--memory``), once."""
        if self._placed:
            return
        from chainzoom.pipeline.components import share_device

        s = self.backbone.scale
        share_device(self.backbone, self.prompter, (plan.view[0] // s) * (plan.view[1] // s))
        self._placed = True

    def load(self) -> ChainZoom:
        """Load both models now (a bad model file then fails before any work starts)."""
        _ = self.backbone, self.prompter
        return self

    # ------------------------------------------------------------------ local zoom

    def job(self, image: ImageInput, **options: Any) -> ZoomConfig:
        """The checked configuration of one zoom of ``image`` with this pipeline's models.

        ``options`` are the fields of :class:`~chainzoom.config.ZoomConfig` that are not
        model options: ``scale``, ``center``, ``view``, ``mode``, ``protocol``, ``process_size``,
        ``max_pixels``, ``out``, ``overwrite``, ``animation``.
        """
        model = self.config.model_options()
        if options.get("mode", "chain") not in MODEL_MODES:
            model = {"runtime": self.config.runtime}  # a baseline of this pipeline uses none of its models
        job: dict[str, Any] = {
            k: str(v) if k == "out" else v for k, v in options.items() if v is not None or k != "out"
        }
        inputs = (str(image),) if isinstance(image, (str, Path)) else ()
        return ZoomConfig(**model, inputs=inputs, **job)

    def prepare(self, image: ImageInput, config: ZoomConfig) -> tuple[LoadedImage, ZoomPlan]:
        """Load the image (:meth:`load_input`) and plan the zoom (:meth:`plan`)."""
        loaded = self.load_input(image, config)
        return loaded, self.plan(loaded.size, config)

    def load_input(self, image: ImageInput, config: ZoomConfig | FullConfig) -> LoadedImage:
        """The image, decoded and checked (under protocol official: its 8-bit centred square)."""
        from chainzoom.io.images import DEFAULT_MAX_PIXELS

        loaded = as_loaded(image, config.max_pixels or DEFAULT_MAX_PIXELS)
        if isinstance(config, ZoomConfig) and config.protocol == "official":
            from chainzoom.pipeline.official import official_square

            return official_square(loaded, config.process_size)
        return loaded

    def plan(self, size: tuple[int, int], config: ZoomConfig) -> ZoomPlan:
        """Every crop and box of a zoom of an image of ``size``; steps at the backbone's scale."""
        from chainzoom.core.geometry import plan_zoom, resolve_center, resolve_view

        step = self.step_factor() if config.mode in MODEL_MODES else 4
        if config.protocol == "official":
            from chainzoom.pipeline.official import official_plan

            if step != 4:
                raise OptionError("backbone", f"protocol official zooms in 4x steps; this backbone is x{step}")
            return official_plan(config.process_size, config.scale, config.mode)
        view = resolve_view(config.view, size, step)
        if config.policy == "adaptive":
            from chainzoom.metrics.niqe import require_scorable_view

            require_scorable_view(view)
        return plan_zoom(size, config.scale, resolve_center(config.center, size), view, step)

    def iter_zoom(self, image: ImageInput, scale: float = 256.0, **options: Any) -> Iterator[ScaleState]:
        """Yield every scale-state as it is made (state 0 first); see :meth:`__call__`."""
        config = self.job(image, scale=scale, **options)
        loaded, plan = self.prepare(image, config)
        yield from self._states(image, loaded, plan, config, options.get("out"), self.adaptive_policy(config))

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
        config = self.job(image, scale=scale, center=center, **options)
        loaded, plan = self.prepare(image, config)
        return self.run(image, loaded, plan, config, on_state, out=options.get("out"))

    def run(
        self,
        image: ImageInput,
        loaded: LoadedImage,
        plan: ZoomPlan,
        config: ZoomConfig,
        on_state: StateCallback | None = None,
        out: str | Path | None = None,
    ) -> ZoomResult:
        """Run a prepared zoom (:meth:`job` and :meth:`prepare`), into the run folder ``out`` if given."""
        started = time.perf_counter()
        out = Path(out) if out is not None else None
        states = []
        policy = self.adaptive_policy(config)
        for state in self._states(image, loaded, plan, config, out, policy):
            states.append(state)
            if on_state is not None:
                on_state(state)
        uses_model = config.mode in MODEL_MODES
        timings = {
            "prompt": sum(s.seconds.get("prompt", 0.0) for s in states),
            "backbone": sum(s.seconds.get("backbone", 0.0) for s in states),
            "total": time.perf_counter() - started,
        }
        from chainzoom.runs.local import backbone_record

        return ZoomResult(
            states,
            policy.plan if policy is not None and policy.plan is not None else plan,
            config,
            backbone_record(self.backbone) if uses_model else None,
            self.prompter.settings() if uses_model else None,
            timings,
            out,
        )

    def adaptive_policy(self, config: ZoomConfig) -> AdaptivePolicy | None:
        """A fresh adaptive policy over ``config``'s candidates (loaded once each), or ``None`` when fixed."""
        if config.policy != "adaptive":
            return None
        from chainzoom.metrics.niqe import score_niqe
        from chainzoom.pipeline.adaptive import AdaptivePolicy

        candidates = {spec: self.candidate(spec) for spec in config.candidate_backbones}
        return AdaptivePolicy(candidates, config.step_factors, score_niqe, "niqe", config.stop_below)

    def candidate(self, spec: str) -> Backbone:
        """The backbone ``spec`` for the adaptive policy: this pipeline's own, or one built once for it."""
        if spec == self.config.backbone_spec:
            return self.backbone
        if spec not in self._candidates:
            from chainzoom.pipeline.components import build_backbone

            self._candidates[spec] = build_backbone(spec, self.runtime)
        return self._candidates[spec]

    def _states(
        self,
        image: ImageInput,
        loaded: LoadedImage,
        plan: ZoomPlan,
        config: ZoomConfig,
        out: str | Path | None,
        policy: AdaptivePolicy | None = None,
    ) -> Iterator[ScaleState]:
        from chainzoom.pipeline.chain import run_states

        uses_model = config.mode in MODEL_MODES
        backbone = self.backbone if uses_model else None
        prompter = self.prompter if uses_model else None
        if uses_model:
            self.place(plan)
        if out is None:
            yield from run_states(
                config.mode,
                loaded,
                plan,
                backbone,
                prompter,
                consistency=config.consistency,
                protocol=config.protocol,
                policy=policy,
            )
            return
        from chainzoom.runs.local import RunFolder, iter_run

        request, source = self.request(image, loaded, config, "zoom")
        yield from iter_run(
            RunFolder(Path(out)),
            loaded,
            plan,
            request,
            source,
            backbone,
            prompter,
            overwrite=config.overwrite,
            animation=config.animation,
            cache_prompts=bool(self._cache_prompts),
            policy=policy,
        )

    def request(
        self, image: ImageInput, loaded: LoadedImage, config: ZoomConfig | FullConfig, kind: str
    ) -> tuple[dict[str, Any], str]:
        """A run's identity (the config's pixel-deciding part, on this machine's device, and the
        input's SHA-256) and where the input came from. The path is provenance, not identity: a
        run folder stays valid when its input or the folder itself is moved."""
        from chainzoom.io.digest import file_sha256

        resolved = dataclasses.replace(config, runtime=self.runtime)
        if isinstance(image, (str, Path)):
            source, digest = str(image), file_sha256(image)
        else:
            source, digest = "<in memory>", hashlib.sha256(loaded.rgb.numpy().tobytes()).hexdigest()
        return identity(resolved, kind=kind, input_sha256=digest), source

    # ------------------------------------------------------------------ full image

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

        ``options``: ``format`` (tiff, dzi, png), ``max_pixels``,
        ``overwrite``. ``on_tile(level, done, total)`` reports progress.
        """
        config = FullConfig(**self.config.model_options(), inputs=(str(image),), out=str(out), scale=scale, **options)
        return self.run_full(config, on_tile)

    def run_full(self, config: FullConfig, on_tile: TileCallback | None = None) -> dict[str, Any]:
        """Run a checked :class:`~chainzoom.config.FullConfig` (one input).

        With ``executor="ray"`` the tiles are made by Ray actors (:meth:`ray_executor`);
        the models are then loaded there, not here.
        """
        from chainzoom.runs.full import DEFAULT_TILE, level_count, zoom_full
        from chainzoom.runs.local import backbone_record

        if len(config.inputs) != 1:
            raise OptionError("inputs", f"full-image mode takes one input image, got {len(config.inputs)}")
        path = config.inputs[0]
        image = self.load_input(path, config)
        prompted = self.config.prompter_spec != "null" or self._prompter is not None
        request, source = self.request(path, image, config, "full")
        options: dict[str, Any] = {
            "fmt": config.format,
            "tile": self.runtime.tile or DEFAULT_TILE,
            "overlap": self.runtime.overlap,
            "request": request,
            "input_path": source,
            "overwrite": config.overwrite,
            "on_tile": on_tile,
        }
        if config.executor == "ray":
            with self.ray_executor(config, tile_prompter=prompted) as executor:
                levels = level_count(config.scale, executor.scale)
                return zoom_full(
                    image,
                    Path(config.out),
                    None,
                    None,
                    levels=levels,
                    backbone_record=executor.backbone_record(),
                    executor=executor,
                    **options,
                )
        backbone = self.backbone
        levels = level_count(config.scale, backbone.scale)
        prompter = self.prompter if prompted else None
        return zoom_full(
            image,
            Path(config.out),
            backbone,
            prompter,
            levels=levels,
            backbone_record=backbone_record(backbone),
            **options,
        )

    # ------------------------------------------------------------------ batches and executors

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
        names = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        config = ZoomConfig(
            **self.config.model_options(), inputs=tuple(map(str, names)), out=str(out), scale=scale, **options
        )
        return self.run_batch(config, progress)

    def check_batch(self, config: ZoomConfig) -> list[tuple[Path, Path]]:
        """Every input of ``config`` and its run folder, each input decoded and planned (a bad one
        stops the batch before anything is written). One input writes into ``out``, several into
        ``out/<name>`` each."""
        from chainzoom.io.images import collect_inputs, input_names

        paths = collect_inputs(config.inputs)
        for path in paths:
            self.plan(self.load_input(path, config).size, config)
        out = Path(config.out)
        outs = [out] if len(paths) == 1 else [out / name for name in input_names(paths)]
        return list(zip(paths, outs))

    def run_batch(
        self,
        config: ZoomConfig,
        progress: ZoomProgress | None = None,
        batch: list[tuple[Path, Path]] | None = None,
    ) -> list[Path]:
        """Run a checked :class:`~chainzoom.config.ZoomConfig` over all its inputs (see :meth:`zoom_batch`);
        ``batch`` is :meth:`check_batch`'s answer when the caller already has it."""
        batch = self.check_batch(config) if batch is None else batch
        paths, outs = [path for path, _ in batch], [folder for _, folder in batch]
        if config.executor != "ray":
            if progress is not None:
                progress.start_batch(len(paths))
            for path, folder in zip(paths, outs):
                self._batch_run(path, folder, config, progress, None)
            return outs
        from functools import partial

        with self.ray_executor(config, tile_prompter=False) as executor:
            if progress is not None:
                progress.start_batch(len(paths))
            executor.zoom_runs(
                [partial(self._batch_run, path, folder, config, progress) for path, folder in zip(paths, outs)]
            )
        return outs

    def _batch_run(
        self, path: Path, folder: Path, config: ZoomConfig, progress: ZoomProgress | None, maker: StateMaker | None
    ) -> None:
        """One image of a batch, its states made here or by ``maker`` (a Ray worker)."""
        from chainzoom.runs.local import RunFolder, iter_run

        loaded, plan = self.prepare(path, config)
        task = progress.add(path.name, len(plan.steps) + 1) if progress is not None else None
        if maker is None:
            states = self._states(path, loaded, plan, config, folder)
        else:
            request, source = self.request(path, loaded, config, "zoom")
            states = iter_run(
                RunFolder(folder),
                loaded,
                plan,
                request,
                source,
                None,
                None,
                overwrite=config.overwrite,
                animation=config.animation,
                maker=maker,
            )
        for state in states:
            if progress is not None:
                progress.step(task, state)
        if progress is not None:
            progress.done(task, folder)

    def worker_copy(self) -> ChainZoom:
        """This pipeline as a Ray actor receives it: the specs, plus only the objects the caller passed.

        Models built here from specs are not shipped: each worker builds its own, on its
        own device (``device="auto"`` resolves on the worker's machine).
        """
        copy = ChainZoom.__new__(ChainZoom)
        copy.config = self.config
        copy._backbone, copy._prompter = self._given
        copy._given = self._given
        copy._runtime = None
        copy._cache_prompts = None if copy._prompter is None else False
        return copy

    def ray_executor(self, config: ExecutorConfig, tile_prompter: bool) -> RayExecutor:
        """Actors on the Ray cluster ``config`` names, each holding a copy of this pipeline's models.

        One line (exit 2 in the CLI) when Ray is not installed or nothing answers at the address.
        """
        from chainzoom.runs.ray_loader import load_ray_executor

        module = load_ray_executor()
        executor: RayExecutor = module.RayExecutor(
            self.worker_copy(), config.ray_address, config.workers, self.config.runtime.device, tile_prompter
        )
        return executor


def as_loaded(image: ImageInput, max_pixels: int | None = None) -> LoadedImage:
    """Accept a path, a PIL image, a LoadedImage or a ``[3,H,W]`` tensor in ``[0,1]``."""
    import torch
    from PIL import Image

    from chainzoom.io.images import DEFAULT_MAX_PIXELS, LoadedImage, from_pil, load_image

    limit = max_pixels or DEFAULT_MAX_PIXELS
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels=limit)
    if isinstance(image, Image.Image):
        return from_pil(image, max_pixels=limit)
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return LoadedImage(image.float().clamp(0, 1), None, 8, None)
    raise TypeError("image must be a path, a PIL image, a LoadedImage or a [3,H,W] tensor")


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
