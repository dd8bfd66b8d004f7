"""The run driver: the one route from a checked config to scale-states and run folders.

Every front-end calls it: ``chainzoom zoom`` (a file, a folder, ``--full``), the
:class:`chainzoom.ChainZoom` pipeline (``__call__``, ``iter_zoom``, ``zoom_batch``,
``zoom_full``), ``chainzoom eval``, the app, and the Ray executor. For one input it

1. decodes the input (:func:`load_input`; protocol official: its 8-bit square) and plans
   the zoom (:func:`plan_for`);
2. resolves the :class:`~chainzoom.job.ZoomJob` (:func:`job_for`): the options that will
   really run, which are what the run folder's manifest records;
3. makes the states with the job's models (:class:`~chainzoom.runs.executors.LocalMaker`)
   or on a Ray actor, into a resumable run folder (:func:`chainzoom.runs.local.iter_run`,
   :func:`chainzoom.runs.full.zoom_full`) or straight to the caller.

The models come from a :class:`~chainzoom.runs.models.ModelSet` (a :class:`chainzoom.ChainZoom`'s),
which holds models and no run state, so a run's output never depends on what was run before it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chainzoom.config import ExecutorConfig, FullConfig, ZoomConfig
from chainzoom.core.geometry import ZoomPlan, plan_zoom, resolve_center, resolve_view
from chainzoom.core.states import ScaleState
from chainzoom.errors import ConfigError, OptionError, RunFolderError
from chainzoom.io.digest import file_sha256
from chainzoom.io.images import DEFAULT_MAX_PIXELS, ImageInput, LoadedImage, as_loaded, collect_inputs, input_names
from chainzoom.job import ZoomJob, resolve_job
from chainzoom.pipeline.adaptive import AdaptivePolicy
from chainzoom.runs.executors import LocalExecutor, LocalMaker, StateMaker
from chainzoom.runs.full import DEFAULT_TILE, zoom_full
from chainzoom.runs.local import RunFolder, iter_run
from chainzoom.runs.models import ModelSet
from chainzoom.runs.progress import ZoomProgress

if TYPE_CHECKING:
    from chainzoom.runs.ray_executor import RayExecutor

TileCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class PreparedZoom:
    """One input, decoded and planned, and its job; ``policy`` decides an adaptive chain's steps."""

    job: ZoomJob
    image: LoadedImage
    plan: ZoomPlan
    policy: AdaptivePolicy | None = None

    @property
    def states_planned(self) -> int:
        return len(self.plan.steps) + 1


def load_input(image: ImageInput, config: ZoomConfig | FullConfig) -> LoadedImage:
    """The image, decoded and checked (under protocol official: its 8-bit centred square)."""
    loaded = as_loaded(image, config.max_pixels or DEFAULT_MAX_PIXELS)
    if isinstance(config, ZoomConfig) and config.protocol == "official":
        from chainzoom.pipeline.official import official_square

        return official_square(loaded, config.process_size)
    return loaded


def plan_for(models: ModelSet, size: tuple[int, int], config: ZoomConfig) -> ZoomPlan:
    """Every crop and box of ``config``'s zoom of an image of ``size``; steps at the backbone's scale."""
    step = models.step_factor(config) if config.uses_models else 4
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


def job_for(
    models: ModelSet,
    image: ImageInput,
    loaded: LoadedImage,
    config: ZoomConfig | FullConfig,
    plan: ZoomPlan | None = None,
) -> ZoomJob:
    """The job of ``config`` on ``image`` (with the states' size of ``plan``): the input's SHA-256
    is its identity, its path provenance (a run folder stays valid when its input or the folder
    itself is moved)."""
    if isinstance(image, (str, Path)):
        source, digest = str(image), file_sha256(image)
    else:
        source, digest = "<in memory>", hashlib.sha256(loaded.rgb.numpy().tobytes()).hexdigest()
    view = plan.view if plan is not None else None
    return resolve_job(config, models.runtime, digest, source, models.objects, view)


def effective_models(models: ModelSet, config: ZoomConfig | FullConfig) -> ZoomConfig | FullConfig:
    """``config`` with the model options a job of it runs (they do not depend on the input)."""
    return resolve_job(config, models.runtime, "", "", models.objects).config


#: Whether this process has said that its outputs are not marked (``marking=none``): said once.
_unmarked_said = False
UNMARKED = "chainzoom: --marking none: outputs are not marked as generated"


def say_marking(config: ZoomConfig | FullConfig) -> None:
    """Under ``marking=none``, one line on stderr, once per process (the manifest records it too)."""
    global _unmarked_said
    if config.marking == "none" and not _unmarked_said:
        _unmarked_said = True
        print(UNMARKED, file=sys.stderr)


def prepare(models: ModelSet, image: ImageInput, config: ZoomConfig, out: str | Path | None = None) -> PreparedZoom:
    """Decode and plan one input and resolve its job (nothing is loaded or written); with the run
    folder ``out``, a run resumed there keeps the precision it recorded (:func:`keep_recorded_dtype`)."""
    say_marking(config)
    loaded = load_input(image, config)
    plan = plan_for(models, loaded.size, config)
    job = job_for(models, image, loaded, config, plan)
    if out is not None:
        job = keep_recorded_dtype(job, config.runtime.dtype, Path(out))
    return PreparedZoom(job, loaded, plan, models.adaptive_policy(job.zoom))


def local_maker(models: ModelSet, zoom: PreparedZoom) -> LocalMaker:
    """The job's states made here, with the job's models placed for its plan."""
    config = zoom.job.zoom
    if not config.uses_models:
        return LocalMaker(None, None)
    backbone, prompter = models.backbone_for(config), models.prompter_for(config)
    models.place(config, zoom.plan)
    return LocalMaker(backbone, prompter, zoom.policy)


def zoom_states(
    models: ModelSet,
    zoom: PreparedZoom,
    out: str | Path | None = None,
    maker: StateMaker | None = None,
) -> Iterator[ScaleState]:
    """Every state of ``zoom`` as it is made (state 0 first), into the run folder ``out`` if given.

    Each run starts from the runtime's seed, so what a pipeline was asked before cannot
    change it. ``maker`` makes the states elsewhere (a Ray actor); by default they are
    made here.
    """
    config = zoom.job.zoom
    torch.manual_seed(zoom.job.runtime.seed)
    local = maker is None
    maker = local_maker(models, zoom) if maker is None else maker
    if out is None:
        yield from maker.states(config, zoom.image, zoom.plan, ())
        return
    yield from iter_run(
        RunFolder(Path(out)),
        zoom.job,
        zoom.image,
        zoom.plan,
        maker,
        overwrite=config.overwrite,
        animation=config.animation,
        cache_prompts=local and config.uses_models and models.caches_prompts(config),
    )


def keep_recorded_dtype(job: ZoomJob, asked: str, folder: Path) -> ZoomJob:
    """``job``, or, when its dtype was ``auto`` and ``folder`` holds its run made in another
    precision, ``job`` in the recorded one: ``auto`` can resolve otherwise on another machine
    (or with other flags of the CPU), and a run is made in one precision from start to end."""
    if asked != "auto" or not job.uses_models:
        return job
    try:
        previous = RunFolder(folder).read_manifest()
    except RunFolderError:
        return job  # the run folder's own checks say what is wrong with it
    if previous is None or not isinstance(previous.get("request"), dict):
        return job
    try:
        recorded = ZoomJob.read(previous["request"], job.source, str(folder)).runtime.dtype
    except ConfigError:
        return job  # another kind of run: refused as such when the folder is prepared
    runtime = dataclasses.replace(job.runtime, dtype=recorded)
    same = dataclasses.replace(job, config=dataclasses.replace(job.config, runtime=runtime))
    return same if same.request() == previous["request"] else job


def check_batch(models: ModelSet, config: ZoomConfig) -> list[tuple[Path, Path]]:
    """Every input of ``config`` and its run folder, each input decoded and planned (a bad one
    stops the batch before anything is loaded or written). One input writes into ``out``,
    several into ``out/<name>`` each."""
    paths = collect_inputs(config.inputs)
    for path in paths:
        plan_for(models, load_input(path, config).size, config)
    out = Path(config.out)
    outs = [out] if len(paths) == 1 else [out / name for name in input_names(paths)]
    return list(zip(paths, outs))


def load_models(models: ModelSet, config: ZoomConfig | FullConfig) -> None:
    """Load the models a job of ``config`` runs, now (a bad model file fails before any work starts)."""
    effective = effective_models(models, config)
    if effective.uses_models:
        models.backbone_for(effective)
        models.prompter_for(effective)


def start_batch(models: ModelSet, config: ZoomConfig) -> list[tuple[Path, Path]]:
    """Everything a batch checks before it starts: a Ray cluster that answers, every input
    (:func:`check_batch`), and, run here, the models loaded."""
    if config.executor == "ray":
        from chainzoom.runs.ray_loader import check_ray

        check_ray(config.ray_address)
    batch = check_batch(models, config)
    if config.executor != "ray":
        load_models(models, config)
    return batch


def run_batch(
    models: ModelSet,
    config: ZoomConfig,
    progress: ZoomProgress | None = None,
    batch: list[tuple[Path, Path]] | None = None,
) -> list[Path]:
    """Every input of ``config`` into its run folder, here or, with executor ray, each as a task
    on a Ray actor (this process still writes every file); return the folders. ``batch`` is
    :func:`start_batch`'s answer when the caller already has it.

    Inputs are decoded again for their runs, so memory holds one image, not the batch.
    """
    batch = start_batch(models, config) if batch is None else batch

    def one(path: Path, folder: Path, maker: StateMaker | None = None) -> None:
        zoom = prepare(models, path, config, folder)
        task = progress.add(path.name, zoom.states_planned) if progress is not None else None
        for state in zoom_states(models, zoom, folder, maker):
            if progress is not None:
                progress.step(task, state)
        if progress is not None:
            progress.done(task, folder)

    if progress is not None:
        progress.start_batch(len(batch))
    if config.executor != "ray":
        for path, folder in batch:
            one(path, folder)
    else:
        with ray_executor(models, effective_models(models, config), tile_prompter=False) as executor:
            executor.zoom_runs([partial(one, path, folder) for path, folder in batch])
    return [folder for _, folder in batch]


def full_input(config: FullConfig) -> Path:
    """The one input of a full-image run."""
    paths = collect_inputs(config.inputs)
    if len(paths) != 1:
        raise OptionError("inputs", f"--full takes one input image, got {len(paths)}; run one command per image")
    return paths[0]


def run_full(models: ModelSet, config: FullConfig, on_tile: TileCallback | None = None) -> dict:
    """Make (or finish) ``config``'s full-image run; return its manifest.

    With executor ray the tiles are made by Ray actors, which load the models there.
    Tiles are prompted when the job's prompter is not ``null``.
    """
    path = full_input(config)
    say_marking(config)
    image = load_input(path, config)
    job = keep_recorded_dtype(job_for(models, path, image, config), config.runtime.dtype, Path(config.out))
    effective = job.config
    prompted = effective.prompter_spec != "null" or job.prompter_object is not None
    tile, overlap = effective.runtime.tile or DEFAULT_TILE, effective.runtime.overlap
    torch.manual_seed(job.runtime.seed)
    if effective.executor == "ray":
        with ray_executor(models, effective, tile_prompter=prompted) as executor:
            return zoom_full(image, job, executor, tile=tile, overlap=overlap, on_tile=on_tile)
    prompter = models.prompter_for(effective) if prompted else None
    local = LocalExecutor(models.backbone_for(effective), prompter)
    return zoom_full(image, job, local, tile=tile, overlap=overlap, on_tile=on_tile)


def ray_executor(models: ModelSet, config: ExecutorConfig, tile_prompter: bool) -> RayExecutor:
    """Actors on the Ray cluster ``config`` names, each holding a copy of ``models``
    for ``config``. One line (exit 2 in the CLI) when Ray is not installed or nothing answers."""
    from chainzoom.runs.ray_loader import load_ray_executor

    module = load_ray_executor()
    executor: RayExecutor = module.RayExecutor(
        models.worker_copy(),
        config.model_config(),
        config.ray_address,
        config.workers,
        models.config.runtime.device,  # as asked (auto): the cluster may have GPUs this machine lacks
        tile_prompter,
    )
    return executor
