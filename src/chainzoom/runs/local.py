"""A zoom run on disk: step PNGs, manifest.json, the strip and the animation, resumable.

The run folder is the unit of resumption. ``manifest.json`` is rewritten (atomically)
after every state, so it always lists exactly the states whose PNG is complete. A
rerun with the same request loads those states back and continues; since the chain
quantizes every state as saved, the result is bit-identical to an uninterrupted run.
A rerun with a different request stops with a clear message unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chainzoom import __version__
from chainzoom.core.geometry import Box, ZoomPlan
from chainzoom.core.states import ScaleState
from chainzoom.errors import InputError, RunFolderError
from chainzoom.io.atomic import atomic_write_json
from chainzoom.io.digest import file_sha256
from chainzoom.io.images import LoadedImage, load_image, save_image
from chainzoom.job import ZoomJob
from chainzoom.pipeline.consistency import method_record
from chainzoom.runs.animation import AnimationWriter, save_animation
from chainzoom.runs.executors import LocalMaker, StateMaker
from chainzoom.runs.lock import RunLock
from chainzoom.runs.manifest import MANIFEST, check_manifest
from chainzoom.runs.render import plan_placements, save_strip

STRIP = "strip.png"
ANIMATION = "zoom.webp"
#: Files a run folder may hold; ``overwrite`` removes these and nothing else.
PROMPT_CACHE = "prompts.json"
RUN_FILE_PATTERNS = ("step_*.png", MANIFEST, STRIP, ANIMATION, PROMPT_CACHE)
#: Temporary files of :func:`chainzoom.io.atomic.atomic_write` that a killed run left behind.
STALE_TEMP_PATTERN = ".*.tmp.*"


def step_filename(index: int) -> str:
    return f"step_{index:02d}.png"


class RunFolder:
    """One run's output folder: what is finished in it, and how to add to it."""

    #: The manifest's list of what the run made, each with its ``index`` (0: the input itself).
    RESULTS = "states"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)
        #: The folders :meth:`prepare` made, outermost first (see :meth:`close`).
        self._created: list[Path] = []
        #: Whether :meth:`prepare` took the folder: only then are the files in it this run's.
        self._taken = False

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        """The folder's manifest, checked (:func:`check_manifest`), or None when there is none."""
        if not self.manifest_path.exists():
            return None
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFolderError(f"{self.manifest_path} is unreadable ({exc}); rerun with --overwrite") from None
        problem = check_manifest(data)
        if problem:
            raise RunFolderError(
                f"{self.manifest_path} is not a chainzoom manifest ({problem}); rerun with --overwrite"
            )
        return dict(data)

    def prepare(self, request: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
        """Lock the folder and check it can take this request; return the previous manifest to resume from.

        The request is checked before anything is written, so a refused run (a folder
        holding another run, or a manifest that is not chainzoom's) leaves the folder as
        it found it; it is checked again under the lock, in case another run wrote in
        between. The folders made for ``path`` are recorded, so :meth:`close` can take
        them away again when the run made nothing. The lock is held until :meth:`close`;
        temporary files of killed runs are removed only under it, so another live run's
        files are never touched.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output {self.path} exists and is not a folder")
        try:
            return self._prepare(request, overwrite)
        except BaseException:
            self.close()
            raise

    def _prepare(self, request: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
        self._check(request, overwrite)
        probe = self.path / ".chainzoom-write-test"
        try:
            self._make_folders()
            self._lock()
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
            raise RunFolderError(f"cannot write to {self.path}: {exc.strerror or exc}") from None
        previous = self._check(request, overwrite)
        if overwrite and self.manifest_path.exists():
            self.clear()
        for stale in self.path.glob(STALE_TEMP_PATTERN):
            stale.unlink()
        self._taken = True
        return previous

    def _check(self, request: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
        """The manifest to resume from, or None; raises when the folder holds a run this request may not take."""
        if overwrite or not self.path.is_dir():
            return None
        previous = self.read_manifest()
        if previous is not None and previous.get("request") != request:
            changed = sorted(
                key
                for key in set(request) | set(previous.get("request", {}))
                if request.get(key) != previous.get("request", {}).get(key)
            )
            raise RunFolderError(
                f"{self.path} holds a run with different arguments ({', '.join(changed)}); "
                "use another --out or add --overwrite"
            )
        return previous

    def _make_folders(self) -> None:
        """``mkdir -p`` the folder, recording each folder this call made (not one another process made first)."""
        missing = []
        folder = self.path
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            self._created.append(folder)

    def _lock(self) -> None:
        try:
            self.lock.acquire()
        except PermissionError as exc:
            raise RunFolderError(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def has_results(self) -> bool:
        """Whether the folder holds a run's result: a complete run, or a state past state 0 (the input's view).

        (For a full-image run, a level past level 0: :attr:`RESULTS`.)

        A manifest that cannot be read counts as results: what is not understood is kept.
        """
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True
        if not isinstance(manifest, dict) or manifest.get("complete"):
            return True
        made = manifest.get(self.RESULTS, [])
        return not isinstance(made, list) or any(not isinstance(m, dict) or m.get("index") != 0 for m in made)

    def close(self) -> None:
        """Release the folder's lock and delete its file (a no-op when it is not held).

        A run that made the folder (and the folders above it) and made nothing in it
        (:meth:`has_results`) takes them away again: its own files are removed under
        the lock, then each folder it made, innermost first, while they are empty. A
        folder that existed before the run is never removed.
        """
        created, self._created = self._created, []
        taken, self._taken = self._taken, False
        if created and taken and self.lock.held and not self.has_results():
            self.clear()
            for stale in self.path.glob(STALE_TEMP_PATTERN):
                stale.unlink(missing_ok=True)
        self.lock.release()
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # not empty: the run's results, another run's lock, or files not the run's
                break

    def clear(self) -> None:
        for pattern in RUN_FILE_PATTERNS:
            for path in self.path.glob(pattern):
                path.unlink()

    def load_states(self, manifest: dict[str, Any]) -> list[ScaleState]:
        """The states a previous run finished, read back from their PNGs.

        A state whose file is missing, unreadable or not the file the run wrote (its
        SHA-256 differs) is made again, and so is every state after it.
        """
        states = []
        for record in manifest.get("states", []):
            path = self.path / record["file"]
            try:
                if file_sha256(path) != record.get("sha256"):
                    break
                loaded = load_image(path)
            except (OSError, InputError):
                break
            states.append(
                ScaleState(
                    record["index"],
                    loaded.rgb,
                    Box(*record["box"]),
                    record["magnification"],
                    record.get("prompt"),
                    loaded.alpha,
                    record.get("seconds", {}),
                    record.get("decision"),
                )
            )
        return states


#: Decimals of the step timings a manifest keeps.
SECONDS_DIGITS = 4


def state_record(state: ScaleState, sha256: str) -> dict[str, Any]:
    return {
        "index": state.index,
        "file": step_filename(state.index),
        "sha256": sha256,
        "box": state.box.as_list(),
        "magnification": state.magnification,
        "prompt": state.prompt,
        "seconds": {k: round(v, SECONDS_DIGITS) for k, v in state.seconds.items()},
        **({"decision": state.decision} if state.decision is not None else {}),
    }


def iter_run(
    folder: RunFolder,
    job: ZoomJob,
    image: LoadedImage,
    plan: ZoomPlan,
    maker: StateMaker,
    *,
    overwrite: bool = False,
    animation: bool = True,
    cache_prompts: bool = False,
) -> Iterator[ScaleState]:
    """Make (or finish) ``job``'s run in ``folder``, yielding every state.

    States a previous run finished are read back and yielded first; each new state is
    made by ``maker`` (here, or on a Ray worker), saved, and the manifest rewritten, before
    it is yielded. The strip and the animation are written once the last state has been
    yielded: a consumer that stops early leaves a run that the next call resumes. The
    folder's lock file goes when the run ends, however it ends; a run that made ``folder``
    and ends before any state past state 0 removes it again (:meth:`RunFolder.close`).
    ``cache_prompts`` keeps a local maker's prompts in the folder, so a resumed run never
    asks a model twice.
    """
    previous = folder.prepare(job.request(), overwrite)
    try:
        check_same_marking(folder, previous, job)
        yield from _run(folder, job, image, plan, previous, maker, animation, cache_prompts)
    finally:
        folder.close()


def _run(
    folder: RunFolder,
    job: ZoomJob,
    image: LoadedImage,
    plan: ZoomPlan,
    previous: dict[str, Any] | None,
    maker: StateMaker,
    animation: bool,
    cache_prompts: bool,
) -> Iterator[ScaleState]:
    config = job.zoom
    policy = maker.policy if isinstance(maker, LocalMaker) else None
    if cache_prompts and isinstance(maker, LocalMaker):
        maker = maker.caching_prompts(folder.path / PROMPT_CACHE)
    done = folder.load_states(previous) if previous else []
    if policy is not None and previous is not None:
        policy.resume_from(previous.get("policy"))
    records = maker.records(config)
    executor = maker.executor_record()
    manifest: dict[str, Any] = {
        **manifest_header(previous, job),
        "backbone": records[0],
        "prompter": records[1],
        "executor": executor,
        "plan": plan_record(plan),
        "consistency": method_record(config.consistency),
        "states": (previous or {}).get("states", [])[: len(done)],
        "complete": False,
    }
    states = list(done)
    # The animation is encoded on a thread, step by step as the states come (runs.animation);
    # an adaptive policy decides the boxes as it goes, so its animation is made at the end.
    writer = None
    if animation and policy is None:
        writer = AnimationWriter(folder.path / ANIMATION, plan_placements(plan), background=True)
    try:
        for state in done:
            if writer is not None:
                writer.add(state)
            yield state
        for state in maker.states(config, image, plan, done):
            path = folder.path / step_filename(state.index)
            save_image(path, state.image, state.alpha, image.bit_depth, xmp=state_marking(job, state))
            states.append(state)
            manifest["states"].append({**state_record(state, file_sha256(path)), "worker": executor["worker"]})
            atomic_write_json(folder.manifest_path, manifest)
            if writer is not None:
                writer.add(state)
            yield state
        started = time.perf_counter()
        save_strip(states, folder.path / STRIP, xmp=run_marking(job, states, "strip"))
        if writer is not None:
            writer.xmp = run_marking(job, states, "animation")
            writer.close()
            writer = None
        elif animation and len(states) > 1:
            save_animation(states, folder.path / ANIMATION, xmp=run_marking(job, states, "animation"))
        if policy is not None:
            manifest["policy"] = policy.record()
            manifest["plan"] = plan_record(policy.plan or plan)
    finally:
        if writer is not None:
            writer.abort()
    manifest["complete"] = True
    manifest["render_seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(folder.manifest_path, manifest)


def manifest_header(previous: dict[str, Any] | None, job: ZoomJob) -> dict[str, Any]:
    """What every manifest starts with: the version that wrote it, when the run began, what it is,
    and whether its images carry the provenance marking (``xmp``, or ``none``: a recorded choice)."""
    return {
        "chainzoom": __version__,
        "created": (previous or {}).get("created") or datetime.now(UTC).isoformat(),
        "request": job.request(),
        "input": job.source,
        "marking": job.config.marking,
    }


def check_same_marking(folder: RunFolder, previous: dict[str, Any] | None, job: ZoomJob) -> None:
    """Refuse to finish a run under another marking than it began with: its files would disagree.

    (A manifest from before marking existed says nothing, and is resumed.)
    """
    recorded = (previous or {}).get("marking")
    if recorded is not None and recorded != job.config.marking:
        raise RunFolderError(
            f"{folder.path} holds a run made with --marking {recorded}; "
            f"resume it with --marking {recorded}, or add --overwrite"
        )


def state_marking(job: ZoomJob, state: ScaleState) -> bytes | None:
    """The XMP packet of a step PNG: state 0 is the input's own pixels, not marked as generated;
    an adaptive step names the backbone it chose."""
    backbone = state.decision.get("backbone") if state.decision else None
    return job.marking(state.magnification, state.prompt, backbone=backbone, generated=state.index > 0)


def run_marking(job: ZoomJob, states: list[ScaleState], what: str) -> bytes | None:
    """The XMP packet of an image showing the whole run (the strip, the animation): the source type
    of its most generated state (a learned step over an interpolated one), at the last magnification."""
    from chainzoom.io.marking import TRAINED_ALGORITHMIC_MEDIA, source_type

    chosen = [str(s.decision["backbone"]) for s in states[1:] if s.decision and s.decision.get("backbone")]
    learned = [b for b in chosen if source_type(b, job.uses_models) == TRAINED_ALGORITHMIC_MEDIA]
    backbone = (learned or chosen)[0] if chosen else None
    return job.marking(states[-1].magnification, backbone=backbone, generated=len(states) > 1, what=what)


def plan_record(plan: ZoomPlan) -> dict[str, Any]:
    return {
        "input_size": list(plan.input_size),
        "view": list(plan.view),
        "center": list(plan.center),
        "scale": plan.scale,
        "steps": [
            {
                "index": s.index,
                "source": s.source,
                "factor": s.factor,
                "crop": [s.crop.left, s.crop.top, s.crop.width, s.crop.height],
                "box": s.box.as_list(),
            }
            for s in plan.steps
        ],
    }
