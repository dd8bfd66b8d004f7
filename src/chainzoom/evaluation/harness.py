"""The evaluation runs behind ``chainzoom eval``: every image x mode, resumable, and their metrics.

Layout of the output folder (``--out``)::

    runs/<image>/<mode>/                 one zoom run to the largest scale (its states
                                         at x4, x16, ... are every smaller scale)
    runs/<image>/fidelity-x<S>/input.png the image downscaled S times
    runs/<image>/fidelity-x<S>/<mode>/   that image zoomed S times back
    metric_cache.json                    no-reference scores by state file hash

Every run is an ordinary :mod:`chainzoom.runs.local` folder, so an interrupted evaluation
resumes bit-identically and a finished run is read back instead of made again (no
model is even built when every run is finished). The no-reference scores are cached
by the hash of the state's PNG, because they cost more than reading the file.

Protocol (see ``docs/evaluation.md``):

- no-reference quality of the state at each requested scale, zooming into the
  centre, every state at the view size;
- fidelity: the image is cropped to a multiple of S, downscaled S times (bicubic,
  antialiased), zoomed S times back into its centre, and the final state compared
  with the original pixels it shows (PSNR, SSIM), at a view no larger than 4x the
  small image (the chain's first step crops a quarter of the view from it);
- drift: every step of every zoom run against the state before it (:mod:`.drift`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chainzoom.api import ChainZoom
from chainzoom.config import EvalConfig, EvalRow, View, eval_rows
from chainzoom.core.geometry import Box, ZoomPlan, default_view, plan_zoom, resolve_view
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.core.vocabulary import MODEL_MODES
from chainzoom.errors import OptionError
from chainzoom.evaluation.plots import thumbnail
from chainzoom.io.atomic import atomic_write_json
from chainzoom.io.digest import file_sha256
from chainzoom.io.images import LoadedImage, collect_inputs, input_names, load_image, save_image
from chainzoom.metrics.catalog import Metric, Unavailable
from chainzoom.metrics.drift import as_array, chain_drift, cumulative_delta_e
from chainzoom.metrics.fidelity import psnr, ssim
from chainzoom.metrics.niqe import require_scorable_view
from chainzoom.runs import driver
from chainzoom.runs.driver import PreparedZoom
from chainzoom.runs.executors import StateMaker
from chainzoom.runs.local import SECONDS_DIGITS, RunFolder, step_filename
from chainzoom.runs.progress import ZoomProgress

STEP = 4
#: Smallest side of the fidelity comparison; below it a scale is reported as too large for the image.
MIN_FIDELITY_SIDE = 32
CACHE_FILE = "metric_cache.json"


@dataclass(frozen=True)
class ResultRow:
    """One line of ``results.csv``."""

    image: str
    mode: str
    scale: int
    metric: str
    value: float


@dataclass
class EvalResults:
    settings: EvalConfig
    rows: list[ResultRow]
    metrics: list[Metric]
    unavailable: list[Unavailable]
    notes: list[str]
    #: image name -> {mode -> {scale -> thumbnail}} at the requested scales, for the sample grids
    #: (thumbnails, not states: a large image set must not be held in memory to the end).
    samples: dict[str, dict[str, dict[int, np.ndarray]]]


class MetricCache:
    """No-reference scores by (state PNG hash, metric), kept in ``metric_cache.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, dict[str, float | None]] = {}
        # no cache yet, or a damaged one: either only costs recomputation
        with contextlib.suppress(OSError, json.JSONDecodeError):
            self.values = json.loads(path.read_text(encoding="utf-8"))

    def score(self, digest: str, image: np.ndarray, metric: Metric) -> float:
        """``metric`` of ``image``, the state whose PNG has sha256 ``digest``."""
        entry = self.values.setdefault(digest, {})
        if metric.name not in entry:
            value = metric.score(image)
            entry[metric.name] = None if math.isnan(value) else value
        stored = entry[metric.name]
        return math.nan if stored is None else stored

    def save(self) -> None:
        atomic_write_json(self.path, self.values)


@dataclass
class _Runner:
    """Makes or reuses run folders with one pipeline, through the run driver, with progress."""

    settings: EvalConfig
    pipeline: ChainZoom
    progress: ZoomProgress

    def prepare(self, path: Path, plan: ZoomPlan, row: EvalRow, folder: Path) -> PreparedZoom:
        """The ``chainzoom zoom`` job of one run: ``row``'s mode, consistency, policy and VLM context,
        at ``plan``'s scale and view; its request is the run folder's identity."""
        config = self.pipeline.job(
            path,
            mode=row.mode,
            consistency=row.consistency,
            **self.policy_options(row),
            scale=float(plan.scale),
            view=plan.view,
            overwrite=self.settings.overwrite,
            animation=False,
        )
        if row.context is not None and config.uses_models:
            config = dataclasses.replace(config, prompter_context=row.context)
        return driver.prepare(self.pipeline.models, path, config, folder)

    def finished(self, folder: Path, request: dict) -> list[ScaleState] | None:
        """The states of a finished run of ``request`` in ``folder`` (read back, every one), or None.

        An adaptive chain's count of states is its own (smaller steps, an early stop), so the
        manifest's count, not the plan's, says whether they are all there.
        """
        run_folder = RunFolder(folder)
        previous = run_folder.read_manifest()
        if (
            previous is not None
            and previous.get("request") == request
            and previous.get("complete")
            and not self.settings.overwrite
        ):
            states = run_folder.load_states(previous)
            if len(states) == len(previous.get("states", [])):
                return states
        return None

    def run(
        self, folder: Path, label: str, path: Path, plan: ZoomPlan, row: EvalRow, maker: StateMaker | None = None
    ) -> list[ScaleState]:
        """The states of ``row``'s run of ``path`` in ``folder``: read back when finished, else made or
        resumed (by ``maker``, a Ray worker, if given).

        Each run is the ``chainzoom zoom`` run of the same image, mode and view, so its
        folder means the same to both commands.
        """
        zoom = self.prepare(path, plan, row, folder)
        states = self.finished(folder, zoom.job.request())
        if states is not None:
            task = self.progress.add(f"{label} (finished before)", 0)
            self.progress.done(task, folder)
            return states
        self.check_backbone(row)
        task = self.progress.add(label, zoom.states_planned)
        states = []
        for state in driver.zoom_states(self.pipeline.models, zoom, folder, maker):
            states.append(state)
            self.progress.step(task, state)
        self.progress.done(task, folder)
        return states

    def policy_options(self, row: EvalRow) -> dict[str, Any]:
        """The zoom options of ``row``'s policy: none for fixed, the adaptive policy's settings otherwise."""
        if row.policy == "fixed":
            return {}
        settings = self.settings
        return {
            "policy": row.policy,
            "backbones": settings.backbones,
            "factors": settings.factors,
            "stop_below": settings.stop_below,
        }

    def check_backbone(self, row: EvalRow) -> None:
        if row.mode in MODEL_MODES and self.pipeline.models.step_factor() != STEP:
            scale = self.pipeline.models.step_factor()
            raise OptionError("backbone", f"chainzoom eval needs a {STEP}x backbone; this one is {scale}x")

    def make_on(self, maker: StateMaker, folder: Path, label: str, path: Path, plan: ZoomPlan, row: EvalRow) -> None:
        """Make (or finish) one run with its states from ``maker`` (a Ray worker); this process writes it."""
        self.run(folder, label, path, plan, row, maker)


def make_on_ray(settings: EvalConfig, runner: _Runner, images: Sequence[Path], plans: list) -> None:
    """Every run of the evaluation made on Ray actors, a task per run; the loop then reads them back."""
    from functools import partial

    out = Path(settings.out)
    runs = []
    rows = eval_rows(settings)
    for row in rows:
        runner.check_backbone(row)
        if row.policy != "fixed" or row.context is not None:
            raise OptionError(
                "executor", f"row {row.label}: the adaptive policy and VLM contexts run on the local executor"
            )
    for path, name, (plan, view, problems) in zip(images, input_names(images), plans):
        for row in rows:
            folder = out / "runs" / name / row.label
            runs.append(
                partial(runner.make_on, folder=folder, label=f"{name} {row.label}", path=path, plan=plan, row=row)
            )
        for scale, problem in problems.items():
            if problem is None:
                folder = out / "runs" / name / f"fidelity-x{scale}"
                low_path, low_plan, _ = prepare_fidelity(load_image(path), scale, view, folder)
                for row in rows:
                    label = f"{name} fidelity x{scale} {row.label}"
                    runs.append(
                        partial(
                            runner.make_on,
                            folder=folder / row.label,
                            label=label,
                            path=low_path,
                            plan=low_plan,
                            row=row,
                        )
                    )
    with driver.ray_executor(runner.pipeline.models, settings, tile_prompter=False) as executor:
        executor.zoom_runs(runs)


def image_view(image: LoadedImage, view: View) -> tuple[int, int]:
    return resolve_view(view, image.size, STEP) if view is not None else default_view(image.size, STEP)


def states_at(states: list[ScaleState], scales: Sequence[int]) -> dict[int, ScaleState]:
    """The state at each magnification that has one (an adaptive chain may step past some, or stop)."""
    found = {}
    for scale in scales:
        for state in states[1:]:  # magnifications are relative to the input's own pixels
            if math.isclose(state.magnification, scale, rel_tol=1e-6):
                found[scale] = state
    return found


def seconds_to(states: list[ScaleState], index: int) -> float:
    """The recorded time of every step up to state ``index`` (what reaching it cost; a resumed
    run keeps the times its states were made in). Each step's time is rounded as its manifest
    stores it, so a run read back gives the value of the run that made it."""
    steps = states[1 : index + 1]
    return round(sum(round(state.seconds.get("total", 0.0), SECONDS_DIGITS) for state in steps), SECONDS_DIGITS)


def stopped_reason(folder: Path) -> str:
    """Why the run in ``folder`` has no state at some magnification: its policy's stop, or its steps."""
    manifest = RunFolder(folder).read_manifest() or {}
    policy = manifest.get("policy") or {}
    if policy.get("stopped"):
        return str(policy["stopped"])
    factors = [step["factor"] for step in manifest.get("plan", {}).get("steps", [])]
    return "steps of " + " x ".join(f"{f:g}" for f in factors)


def fidelity_view(view: tuple[int, int], small: tuple[int, int]) -> tuple[int, int]:
    """The view, shrunk (aspect kept) to at most 4x the downscaled image, in multiples of 4."""
    f = min(1.0, STEP * small[0] / view[0], STEP * small[1] / view[1])
    return tuple(int(v * f) // STEP * STEP for v in view)  # type: ignore[return-value]


def fidelity_problem(size: tuple[int, int], scale: int, view: tuple[int, int]) -> str | None:
    """Why fidelity cannot be measured at ``scale`` for an image of ``size``, or None."""
    small = (size[0] // scale, size[1] // scale)
    if min(small) == 0 or min(fidelity_view(view, small)) < MIN_FIDELITY_SIDE:
        need = MIN_FIDELITY_SIDE * scale // STEP
        return f"fidelity at x{scale} needs an image of at least {need} px a side; {size[0]}x{size[1]} is too small"
    return None


def prepare_fidelity(
    image: LoadedImage, scale: int, view: tuple[int, int], folder: Path
) -> tuple[Path, ZoomPlan, np.ndarray]:
    """The downscaled input (written to ``folder/input.png``), its plan, and the original
    pixels its zoomed final state should show (see :func:`fidelity_problem` first)."""
    w, h = image.size
    small = (w // scale, h // scale)
    fview = fidelity_view(view, small)
    left, top = (w - small[0] * scale) // 2, (h - small[1] * scale) // 2
    original = image.rgb[:, top : top + small[1] * scale, left : left + small[0] * scale]
    path = folder / "input.png"
    save_image(path, resize(original, small, "bicubic"), bit_depth=image.bit_depth)
    plan = plan_zoom(small, scale, (small[0] / 2, small[1] / 2), fview, STEP)
    box = Box(*(v * scale for v in plan.final_box.as_list()))
    return path, plan, as_array(resize(original, fview, "bicubic", box))


def evaluate(
    settings: EvalConfig,
    metrics: Sequence[Metric],
    unavailable: Sequence[Unavailable],
    progress: ZoomProgress,
) -> EvalResults:
    """Make or reuse every run, score it, and return the rows of ``results.csv``.

    The models load once, and only when a run has to be made.
    """
    out = Path(settings.out)
    images = collect_inputs(settings.images)
    cache = MetricCache(out / CACHE_FILE)
    runner = _Runner(settings, ChainZoom.from_config(settings), progress)
    rows: list[ResultRow] = []
    notes: list[str] = []
    samples: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    top = settings.scales[-1]
    # Every image is read and planned before any run starts: a bad file or a view too
    # large for an image stops the evaluation before it has spent any time.
    plans = []
    for path in images:
        image = load_image(path)
        view = image_view(image, settings.view)
        w, h = image.size
        if "adaptive" in settings.policy:
            require_scorable_view(view, path.name)
        problems = {s: fidelity_problem((w, h), s, view) for s in settings.scales} if settings.fidelity else {}
        plans.append((plan_zoom((w, h), top, (w / 2, h / 2), view, STEP), view, problems))
    if settings.executor == "ray":
        make_on_ray(settings, runner, images, plans)
    runs = sum(1 + sum(p is None for p in problems.values()) for _, _, problems in plans)
    rows_to_make = eval_rows(settings)
    progress.start_batch(len(rows_to_make) * runs)
    for path, name, (plan, view, problems) in zip(images, input_names(images), plans):
        image = load_image(path)
        samples[name] = {}
        for row in rows_to_make:
            mode = row.label
            folder = out / "runs" / name / mode
            states = runner.run(folder, f"{name} {mode}", path, plan, row)
            at = states_at(states, settings.scales)
            if len(at) < len(settings.scales):
                notes.append(
                    f"{name} {mode}: no state at x{', x'.join(str(s) for s in settings.scales if s not in at)}"
                    f" ({stopped_reason(folder)})"
                )
            samples[name][mode] = {s: thumbnail(state.image) for s, state in at.items()}
            for scale, state in at.items():
                rows.append(ResultRow(name, mode, scale, "seconds", seconds_to(states, state.index)))
            for scale, state in at.items():
                array = as_array(state.image)
                digest = file_sha256(folder / step_filename(state.index))
                for metric in metrics:
                    value = cache.score(digest, array, metric)
                    if not math.isnan(value):
                        rows.append(ResultRow(name, mode, scale, metric.name, value))
            cache.save()
            if settings.drift:
                for step in chain_drift(states):
                    scale = round(step.magnification)
                    rows.append(ResultRow(name, mode, scale, "drift_psnr", step.psnr))
                    rows.append(ResultRow(name, mode, scale, "drift_delta_e", step.delta_e))
                for magnification, delta_e in cumulative_delta_e(states):
                    rows.append(ResultRow(name, mode, round(magnification), "drift_x0_delta_e", delta_e))
        for scale, problem in problems.items():
            if problem is None:
                rows += _fidelity_rows(settings, runner, name, image, scale, view)
            else:
                notes.append(f"{name}: {problem}")
    return EvalResults(settings, rows, list(metrics), list(unavailable), notes, samples)


def _fidelity_rows(
    settings: EvalConfig, runner: _Runner, name: str, image: LoadedImage, scale: int, view: tuple[int, int]
) -> list[ResultRow]:
    folder = Path(settings.out) / "runs" / name / f"fidelity-x{scale}"
    path, plan, reference = prepare_fidelity(image, scale, view, folder)
    rows = []
    for row in eval_rows(settings):
        mode = row.label
        states = runner.run(folder / mode, f"{name} fidelity x{scale} {mode}", path, plan, row)
        if not math.isclose(states[-1].magnification, plan.magnification(len(plan.steps))):
            continue  # an adaptive chain that stopped before the magnification has no final state to compare
        final = as_array(states[-1].image)
        rows.append(ResultRow(name, mode, scale, "fidelity_psnr", psnr(final, reference)))
        rows.append(ResultRow(name, mode, scale, "fidelity_ssim", ssim(final, reference)))
    return rows
