"""The Ray executor: tiles and whole zooms on actors that each load the models once.

Imported only for ``--executor ray`` (``import ray`` is here, at the top). The driver
keeps doing what it does for a local run: it reads every input, writes every file and
the manifest, and shows progress; the actors only turn inputs into pixels with the
same functions a local run calls (:func:`~chainzoom.runs.executors.render_tile`,
:func:`~chainzoom.runs.executors.zoom_states`). Inputs and results travel through
Ray's object store, so the workers need no access to the driver's disk.

Faults: a worker process that dies fails the work it had in flight; the driver gives
that work to another live worker (Ray restarts the dead one in the background, and it
rejoins once it answers). A tile or a zoom that kills its worker
:data:`MAX_ATTEMPTS` times stops the run with a message. A killed driver takes its
actors with it; rerunning the command resumes from the files written, as locally.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from chainzoom.config import ModelConfig, ZoomConfig
from chainzoom.core.geometry import ZoomPlan
from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError, OptionError, one_line
from chainzoom.io.images import LoadedImage
from chainzoom.runs.executors import (
    Models,
    TileInput,
    TileJob,
    TileResult,
    backbone_record,
    render_tile,
    worker_name,
    zoom_states,
)

#: Tasks queued per actor: one running, one whose input is already on its way.
DEPTH = 2
#: How often one tile or one zoom may kill a worker before the run stops.
MAX_ATTEMPTS = 3
#: Seconds to wait for a cluster address to accept a connection.
CONNECT_TIMEOUT = 5.0
#: Seconds a restarted worker has to answer before it is given up on.
REVIVE_TIMEOUT = 120.0
#: Seconds the cluster has to start every worker and load its models.
STARTUP_TIMEOUT = 600.0


def resolve_address(address: str | None) -> str:
    """The flag, else ``RAY_ADDRESS``, else ``local`` (a private Ray instance on this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def check_address(address: str) -> None:
    """Refuse, in one line, an address where nothing answers (``ray.init`` would wait for minutes)."""
    if address in ("auto", "local"):
        return
    body = address.removeprefix("ray://")
    host, _, port = body.rpartition(":")
    if not host or not port.isdigit():
        raise OptionError("ray_address", f"must be HOST:PORT, ray://HOST:PORT, auto or local, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise OptionError(
            "ray_address",
            f"{address}: no Ray cluster answers there ({exc.strerror or exc}); start one with `ray start --head`",
        ) from None


class _Worker:
    """A Ray actor: one backbone and one prompter, loaded once, for every tile and zoom it is given."""

    def __init__(self, models: Models, config: ModelConfig, tile_prompter: bool) -> None:
        self.models = models
        self.config = config
        self.tile_prompter = tile_prompter
        self.name = worker_name("ray")

    def describe(self) -> dict[str, Any]:
        """Load the models now (a bad model fails before any work) and say what they are."""
        backbone = self.models.backbone_for(self.config)
        prompter = self.models.prompter_for(self.config) if self.tile_prompter else None
        return {
            "name": self.name,
            "scale": backbone.scale,
            "backbone": backbone_record(backbone),
            "prompter": prompter.settings() if prompter is not None else None,
        }

    def ping(self) -> str:
        return self.name

    def tile(self, job: TileJob, tile: TileInput) -> TileResult:
        prompter = self.models.prompter_for(self.config) if self.tile_prompter else None
        return render_tile(self.models.backbone_for(self.config), prompter, job, tile, self.name)

    def records(self, config: ZoomConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
        if not config.uses_models:
            return None, None, self.name
        backbone, prompter = self.models.backbone_for(config), self.models.prompter_for(config)
        return backbone_record(backbone), prompter.settings(), self.name

    def zoom(
        self, config: ZoomConfig, image: LoadedImage, plan: ZoomPlan, done: Sequence[ScaleState]
    ) -> Iterator[ScaleState]:
        yield from zoom_states(self.models, config, image, plan, done, self.name)


@dataclass
class _Actor:
    handle: Any
    load: int = 0
    alive: bool = True


class RayExecutor:
    """``workers`` actors on the Ray cluster at ``address``, each holding ``models``.

    ``tile_prompter`` says whether full-image tiles are prompted (the prompter is not
    ``null``). Use it as a context manager: leaving it ends the actors, and the Ray
    connection if this executor made it.
    """

    kind = "ray"

    def __init__(
        self,
        models: Models,
        config: ModelConfig,
        address: str | None,
        workers: int | None,
        device: str,
        tile_prompter: bool,
    ) -> None:
        self.address = resolve_address(address)
        check_address(self.address)
        self.connected_here = not ray.is_initialized()
        if self.connected_here:
            dashboard = False if self.address == "local" else None
            try:
                ray.init(
                    address=self.address,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    include_dashboard=dashboard,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                reason = one_line(exc.__cause__ or exc)  # Ray's own reason (an auth token, a version) is the cause
                raise OptionError("ray_address", f"{self.address}: cannot join the Ray cluster ({reason})") from None
        try:
            self._start(models, config, workers, device, tile_prompter)
        except BaseException:
            self.close()
            raise

    def _start(
        self, models: Models, config: ModelConfig, workers: int | None, device: str, tile_prompter: bool
    ) -> None:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
        cpus = max(1, int(resources.get("CPU", 1)))
        self.workers = workers or gpus or cpus
        # Each actor gets an equal share of the GPUs (one each when there are enough) or, on
        # CPUs, of the cores (torch runs that many threads); more workers than devices share.
        if gpus:
            options: dict[str, Any] = {"num_gpus": 1 if self.workers <= gpus else gpus / self.workers, "num_cpus": 0}
        else:
            options = {"num_cpus": cpus // self.workers if self.workers <= cpus else cpus / self.workers}
        remote = ray.remote(max_restarts=-1, max_task_retries=0, **options)(_Worker)
        self.actors = [_Actor(remote.remote(models, config, tile_prompter)) for _ in range(self.workers)]
        try:
            facts = [self._get(actor.handle.describe.remote(), timeout=STARTUP_TIMEOUT) for actor in self.actors]
        except ray.exceptions.GetTimeoutError:
            raise ChainZoomError(
                f"the Ray cluster did not start {self.workers} workers within {STARTUP_TIMEOUT:.0f} s "
                f"(it has {ray.cluster_resources()}); ask for fewer --workers"
            ) from None
        self.facts = facts[0]
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ what a run records

    @property
    def scale(self) -> int:
        return int(self.facts["scale"])

    @property
    def uses_prompter(self) -> bool:
        return self.facts["prompter"] is not None

    def prompter_settings(self) -> dict[str, Any] | None:
        settings: dict[str, Any] | None = self.facts["prompter"]
        return settings

    def backbone_record(self) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.facts["backbone"]
        return record

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "workers": self.workers}

    # ------------------------------------------------------------------ tiles

    def map_tiles(
        self, jobs: Iterable[TileJob], inputs: Callable[[TileJob], TileInput]
    ) -> Iterator[tuple[TileJob, TileResult]]:
        """Every job's result as it finishes; at most :data:`DEPTH` tiles per actor in flight."""
        pending = deque(jobs)
        attempts: dict[str, int] = {}
        flight: dict[Any, tuple[TileJob, _Actor]] = {}
        reviving: dict[Any, _Actor] = {}
        while pending or flight:
            for actor in self.actors:
                while pending and actor.alive and actor.load < DEPTH:
                    job = pending.popleft()
                    flight[actor.handle.tile.remote(job, inputs(job))] = (job, actor)
                    actor.load += 1
            if not flight and not reviving:
                raise ChainZoomError("every Ray worker has died; rerun the command to resume")
            ready, _ = ray.wait([*flight, *reviving], num_returns=1)
            ref = ready[0]
            if ref in reviving:
                actor = reviving.pop(ref)
                actor.alive = self._answers(ref)
                continue
            job, actor = flight.pop(ref)
            actor.load -= 1
            try:
                result: TileResult = self._get(ref)
            except RayActorError as exc:
                attempts[job.name] = attempts.get(job.name, 0) + 1
                if attempts[job.name] >= MAX_ATTEMPTS:
                    raise ChainZoomError(
                        f"tile {job.name} of level {job.level} killed its Ray worker {MAX_ATTEMPTS} times ({exc})"
                    ) from None
                pending.appendleft(job)
                if actor.alive:  # new work waits until Ray has restarted it
                    actor.alive = False
                    reviving[actor.handle.ping.remote()] = actor
                continue
            yield job, result

    # ------------------------------------------------------------------ zooms (a task per image)

    def zoom_runs(self, runs: Sequence[Callable[[RemoteChain], None]]) -> None:
        """Run each zoom (a callable that writes its run folder from a chain's states) on a free actor.

        A zoom whose worker dies is run again on another actor: its run folder already
        holds the states made before, so it resumes there.
        """
        idle: queue.Queue[_Actor] = queue.Queue()
        for actor in self.actors:
            idle.put(actor)

        def one(run: Callable[[RemoteChain], None]) -> None:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if self.stopping.is_set():
                    return
                actor = self._take(idle)
                try:
                    run(RemoteChain(actor.handle, self))
                except RayActorError as exc:
                    if self.stopping.is_set():
                        return
                    threading.Thread(target=self._revive, args=(actor, idle), daemon=True).start()
                    if attempt == MAX_ATTEMPTS:
                        raise ChainZoomError(f"a zoom killed its Ray worker {MAX_ATTEMPTS} times ({exc})") from None
                    continue
                idle.put(actor)
                return

        pool = ThreadPoolExecutor(max_workers=len(self.actors))
        futures = [pool.submit(one, run) for run in runs]
        try:
            for future in futures:
                future.result()
        except BaseException:
            # A failed zoom or Ctrl-C: start nothing more, and end the zooms in flight with
            # the actors (close), rather than wait for them.
            self.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _take(self, idle: queue.Queue[_Actor]) -> _Actor:
        while True:
            try:
                return idle.get(timeout=1.0)
            except queue.Empty:
                if self.stopping.is_set():
                    raise ChainZoomError("the run is stopping") from None
                if not any(actor.alive for actor in self.actors):
                    raise ChainZoomError("every Ray worker has died; rerun the command to resume") from None

    def _revive(self, actor: _Actor, idle: queue.Queue[_Actor]) -> None:
        actor.alive = self._answers(actor.handle.ping.remote())
        if actor.alive:
            idle.put(actor)

    def _answers(self, ref: Any) -> bool:
        try:
            ray.get(ref, timeout=REVIVE_TIMEOUT)
        except (RayActorError, ray.exceptions.GetTimeoutError):
            return False
        return True

    @staticmethod
    def _get(ref: Any, timeout: float | None = None) -> Any:
        """``ray.get``, with an error raised on a worker re-raised as itself (one line for the user)."""
        try:
            return ray.get(ref, timeout=timeout)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, ChainZoomError):
                raise cause from None
            raise

    def close(self) -> None:
        if hasattr(self, "stopping"):
            self.stopping.set()
        for actor in getattr(self, "actors", []):
            ray.kill(actor.handle)
        self.actors = []
        if self.connected_here and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteChain:
    """One zoom's states made on one actor (the :class:`~chainzoom.runs.local.StateMaker` of a Ray run)."""

    def __init__(self, actor: Any, executor: RayExecutor) -> None:
        self.actor = actor
        self.executor = executor
        self.worker = "ray:?"

    def records(self, config: ZoomConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        backbone, prompter, self.worker = self.executor._get(self.actor.records.remote(config))
        return backbone, prompter

    def executor_record(self) -> dict[str, Any]:
        return {**self.executor.record(), "worker": self.worker}

    def states(
        self, config: ZoomConfig, image: LoadedImage, plan: ZoomPlan, done: Sequence[ScaleState]
    ) -> Iterator[ScaleState]:
        remote = self.actor.zoom.options(num_returns="streaming")
        stream = remote.remote(config, image, plan, list(done))
        for ref in stream:
            yield self.executor._get(ref)
