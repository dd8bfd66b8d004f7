"""Where the work of a run is done: in this process, or on the actors of a Ray cluster.

The driver (the process the user started) owns the run folder: it reads the inputs,
writes every file and keeps the manifest, exactly as a local run does. An executor
only makes pixels from inputs it is handed, with two units of work:

- a **tile** of a full-image level (:func:`render_tile`): the tile and its prompt
  context in, the kept part of the upscaled tile and its prompt out;
- the **states of one zoom** (:class:`LocalMaker`, :func:`zoom_states`): the job's config,
  an image and its plan in, the scale-states out, one by one.

Both executors call these same functions, so a tile or a state is the same bytes
wherever it was made. :class:`LocalExecutor` runs them here, in order; the Ray
executor (:mod:`chainzoom.runs.ray_executor`, imported only when asked for) runs
them on actors that each load the models once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from chainzoom.backbones.base import Backbone
from chainzoom.config import ModelConfig, ZoomConfig
from chainzoom.core.geometry import ZoomPlan
from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import LoadedImage, from_samples, to_samples
from chainzoom.pipeline.adaptive import AdaptivePolicy
from chainzoom.pipeline.chain import run_states
from chainzoom.pipeline.consistency import make_locally_consistent
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.cache import CachedPrompter


class Models(Protocol):
    """What a worker holds: the models of a job's config, loaded on first use (a :class:`chainzoom.ChainZoom`)."""

    def backbone_for(self, config: ModelConfig) -> Backbone:
        """The backbone ``config`` names, with its options (built once)."""
        ...

    def prompter_for(self, config: ModelConfig) -> Prompter:
        """The prompter ``config`` names, with its options (built once)."""
        ...


class StateMaker(Protocol):
    """Where a zoom's states are made: here (:class:`LocalMaker`) or on a Ray actor
    (:class:`~chainzoom.runs.ray_executor.RemoteChain`)."""

    def records(self, config: ZoomConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The backbone's record and the prompter's settings, for the manifest."""
        ...

    def executor_record(self) -> dict[str, Any]:
        """What the manifest says about the executor, with ``worker``: the process making the states."""
        ...

    def states(
        self, config: ZoomConfig, image: LoadedImage, plan: ZoomPlan, done: Sequence[ScaleState]
    ) -> Iterator[ScaleState]:
        """The states of ``config``'s zoom of ``image`` after ``done``."""
        ...


def backbone_record(backbone: Backbone | None) -> dict[str, Any] | None:
    """The backbone's card, plus its settings (adapter files and hashes) when it has them."""
    if backbone is None:
        return None
    record = backbone.card().as_dict()
    settings = getattr(backbone, "settings", None)
    if callable(settings):
        record["settings"] = settings()
    return record


class LocalMaker:
    """A zoom's states made in this process, with the job's models (``None`` where no model runs)."""

    def __init__(
        self,
        backbone: Backbone | None,
        prompter: Prompter | None,
        policy: AdaptivePolicy | None = None,
        worker: str | None = None,
    ) -> None:
        self.backbone = backbone
        self.prompter = prompter
        self.policy = policy
        self.worker = worker or worker_name("local")

    def caching_prompts(self, path: Path) -> LocalMaker:
        """The same maker, its prompter's answers kept in the file ``path`` (a resumed run asks no model twice)."""
        prompter = CachedPrompter(self.prompter, path) if self.prompter is not None else None
        return LocalMaker(self.backbone, prompter, self.policy, self.worker)

    def records(self, config: ZoomConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return backbone_record(self.backbone), self.prompter.settings() if self.prompter is not None else None

    def executor_record(self) -> dict[str, Any]:
        return {"kind": "local", "worker": self.worker}

    def states(
        self, config: ZoomConfig, image: LoadedImage, plan: ZoomPlan, done: Sequence[ScaleState]
    ) -> Iterator[ScaleState]:
        return run_states(
            config.mode,
            image,
            plan,
            self.backbone,
            self.prompter,
            done,
            config.consistency,
            config.protocol,
            self.policy,
        )


@dataclass(frozen=True)
class TileJob:
    """One tile of a full-image level: where it is in the previous level and what of it is kept.

    ``keep_x``/``keep_y`` are the output ranges (tile coordinates) whose blending weight
    is not zero; only that part travels back and is cached.
    """

    level: int
    iy: int
    ix: int
    x: int
    y: int
    width: int
    height: int
    scale: int
    keep_x: tuple[int, int]
    keep_y: tuple[int, int]
    #: ``none``, ``wavelet`` or ``backprojection``: the tile's output made consistent with its input.
    consistency: str = "none"

    @property
    def name(self) -> str:
        return f"y{self.iy:05d}_x{self.ix:05d}"


@dataclass(frozen=True)
class TileInput:
    """What a tile needs: its 8-bit pixels and, when prompted, its neighbourhood at the tile's size."""

    crop: np.ndarray
    wide: torch.Tensor | None


@dataclass(frozen=True)
class TileResult:
    """The kept part of the upscaled tile (8-bit), its prompt, the backbone's seconds and who made it."""

    kept: np.ndarray
    prompt: str | None
    seconds: float
    worker: str


def worker_name(kind: str) -> str:
    """``kind:host:pid``: the process that made a tile or a state, as manifests record it."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def render_tile(
    backbone: Backbone, prompter: Prompter | None, job: TileJob, tile: TileInput, worker: str
) -> TileResult:
    """Prompt and upscale one tile, keeping the part whose blending weight is not zero."""
    prompt = None
    if prompter is not None:
        if tile.wide is None:
            raise ChainZoomError(f"tile {job.name}: the prompter needs the tile's neighbourhood, none was sent")
        prompt = prompter.describe(PromptContext(job.level, tile.wide, from_samples(tile.crop)))
    started = time.perf_counter()
    crop = from_samples(tile.crop)
    result = backbone.upscale(crop, prompt or "")
    seconds = time.perf_counter() - started
    if job.consistency != "none":  # local methods only (FullConfig refuses the others), so tiles blend
        result = make_locally_consistent(job.consistency, result, crop)
    expected = (3, job.height * job.scale, job.width * job.scale)
    if tuple(result.shape) != expected:
        raise ChainZoomError(f"the backbone returned {tuple(result.shape)} for a tile, not {expected}")
    (y0, y1), (x0, x1) = job.keep_y, job.keep_x
    return TileResult(to_samples(result[:, y0:y1, x0:x1]), prompt, seconds, worker)


def zoom_states(
    models: Models, config: ZoomConfig, image: LoadedImage, plan: ZoomPlan, done: Sequence[ScaleState], worker: str
) -> Iterator[ScaleState]:
    """The states of one zoom after ``done``, made with ``models`` (a Ray worker's)."""
    uses_model = config.uses_models
    backbone = models.backbone_for(config) if uses_model else None
    prompter = models.prompter_for(config) if uses_model else None
    return LocalMaker(backbone, prompter, None, worker).states(config, image, plan, done)


class TileExecutor(Protocol):
    """Makes the tiles of a level; results come back as they finish, in any order."""

    #: ``local`` or ``ray``.
    kind: str

    @property
    def scale(self) -> int:
        """The backbone's scale (every level is this many times the last)."""
        ...

    @property
    def uses_prompter(self) -> bool:
        """Whether tiles are prompted (then each tile needs its neighbourhood)."""
        ...

    def prompter_settings(self) -> dict[str, Any] | None: ...

    def backbone_record(self) -> dict[str, Any] | None:
        """The backbone's record (:func:`backbone_record`) of the models making the tiles."""
        ...

    def record(self) -> dict[str, Any]:
        """What the manifest says about the executor."""
        ...

    def map_tiles(
        self, jobs: Iterable[TileJob], inputs: Callable[[TileJob], TileInput]
    ) -> Iterator[tuple[TileJob, TileResult]]: ...


class LocalExecutor:
    """Tiles made one after the other in this process, with models the caller loaded."""

    kind = "local"

    def __init__(self, backbone: Backbone, prompter: Prompter | None) -> None:
        self.backbone = backbone
        self.prompter = prompter
        self.worker = worker_name("local")

    @property
    def scale(self) -> int:
        return self.backbone.scale

    @property
    def uses_prompter(self) -> bool:
        return self.prompter is not None

    def prompter_settings(self) -> dict[str, Any] | None:
        return self.prompter.settings() if self.prompter is not None else None

    def backbone_record(self) -> dict[str, Any] | None:
        return backbone_record(self.backbone)

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def map_tiles(
        self, jobs: Iterable[TileJob], inputs: Callable[[TileJob], TileInput]
    ) -> Iterator[tuple[TileJob, TileResult]]:
        for job in jobs:
            yield job, render_tile(self.backbone, self.prompter, job, inputs(job), self.worker)
