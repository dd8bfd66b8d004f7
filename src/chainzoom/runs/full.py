"""Full-image Chain-of-Zoom: every level is the whole image at ``scale`` times the last.

The output grows 16x in pixels per 4x step, so no level is ever held in memory.
Each level is made from the previous one in two passes over disk:

1. **Tiles.** The previous level is cut into overlapping tiles exactly as
   :func:`chainzoom.pipeline.tiling.upscale_tiled` cuts an image (same starts, same
   weights: each neighbour owns the half of the shared band nearer to it and only
   a narrow feather band in the middle is blended). Each tile is read from the
   previous level's file, prompted on its own (the prompter sees the tile's
   neighbourhood, as the official full-image script shows its VLM a thumbnail),
   upscaled, and the part of it whose weight is not zero is saved to a cache file.
   A finished tile is a file, so a killed run resumes from the finished tiles.
2. **Cells.** The level is partitioned into cells, one per tile, cut where the
   next tile's weight starts. Each cell is blended from the few cached tiles that
   reach into it and written into the level's raw file (:class:`RawLevel`).

Memory is bounded by a tile and a cell, whatever the level's size. The finished
level is then streamed by libvips into a pyramidal TIFF, a Deep Zoom tree or a PNG
(:mod:`chainzoom.runs.pyramid`). Cached tiles are 8-bit, so the blended result is within
1/255 of blending the float tiles, which ``upscale_tiled`` does.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chainzoom.config import FullConfig
from chainzoom.core.geometry import Box
from chainzoom.core.resample import resize
from chainzoom.errors import ChainZoomError
from chainzoom.io.atomic import atomic_write, atomic_write_json
from chainzoom.io.images import LoadedImage, from_samples, to_samples
from chainzoom.job import ZoomJob
from chainzoom.pipeline.consistency import anchor_shift, method_record, resize_signed
from chainzoom.pipeline.tiling import axis_weights, free_memory_bytes, tile_starts
from chainzoom.runs.executors import TileExecutor, TileInput, TileJob, TileResult
from chainzoom.runs.local import RunFolder, check_same_marking, manifest_header
from chainzoom.runs.manifest import MANIFEST
from chainzoom.runs.pyramid import PARTIAL, RawLevel, level_path, remove_level, write_level
from chainzoom.runtime import DEFAULT_OVERLAP, FULL_IMAGE_TILE

#: Default tile side in input px (:data:`chainzoom.runtime.FULL_IMAGE_TILE`); ``--tile`` overrides it.
DEFAULT_TILE = FULL_IMAGE_TILE
#: Bytes a PNG level costs in memory when opened by a viewer or by Pillow (float32 RGB).
PNG_BYTES_PER_PIXEL = 12
#: Side, in level px, of the blocks the ``anchor`` passes read and write (at least one input px).
ANCHOR_BLOCK = 1024
#: Side of the neighbourhood the prompter sees, in tiles: the tile is its centre quarter,
#: as a local-zoom view is the centre quarter of the previous state.
PROMPT_CONTEXT = 4
CACHE = "tiles"
#: In each level's tile cache: one ``name<TAB>worker`` line per finished tile.
WORKERS_LOG = "workers.tsv"
TILE_NAME = re.compile(r"y\d{5}_x\d{5}")

TileCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of a level is cut into tiles and cells.

    ``starts`` are the tiles' input offsets and ``size`` their input length;
    ``weights[i]`` is tile ``i``'s blending weight over its output, ``keep[i]`` the
    output range (level coordinates) where that weight is not zero, and ``cells``
    a partition of the output, one range per tile.
    """

    starts: tuple[int, ...]
    size: int
    scale: int
    weights: tuple[np.ndarray, ...]
    keep: tuple[tuple[int, int], ...]
    cells: tuple[tuple[int, int], ...]

    def reaching(self, start: int, end: int) -> list[int]:
        """The tiles whose kept output overlaps ``[start, end)``."""
        return [i for i, (a, b) in enumerate(self.keep) if a < end and b > start]


def plan_axis(length: int, tile: int, overlap: int, scale: int) -> AxisPlan:
    """Cut an axis of ``length`` input px as :func:`chainzoom.pipeline.tiling.upscale_tiled` does."""
    if overlap >= tile:
        raise ChainZoomError(f"--tile-overlap ({overlap}) must be smaller than --tile ({tile})")
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    weights, keep = [], []
    for index, start in enumerate(starts):
        weight = axis_weights(starts, index, size, scale).numpy()
        nonzero = np.flatnonzero(weight)
        weights.append(weight[nonzero[0] : nonzero[-1] + 1])
        keep.append((start * scale + int(nonzero[0]), start * scale + int(nonzero[-1]) + 1))
    bounds = [0] + [a for a, _ in keep[1:]] + [length * scale]
    cells = tuple(zip(bounds[:-1], bounds[1:]))
    return AxisPlan(tuple(starts), size, scale, tuple(weights), tuple(keep), cells)


def level_count(scale: float, step: int) -> int:
    """How many ``step``-x levels make ``scale``; full mode has no fractional last step."""
    levels = round(math.log(scale, step)) if scale > 1 else 0
    if levels < 1 or step**levels != scale:
        powers = ", ".join(str(step**n) for n in range(1, 6))
        raise ChainZoomError(f"--full needs --scale a power of {step} ({powers}, ...), got {scale:g}")
    return levels


def check_png_fits(size: tuple[int, int], free_bytes: int) -> None:
    """``--format png`` writes each level as one file a reader must hold whole: refuse what cannot fit."""
    width, height = size
    needed = width * height * PNG_BYTES_PER_PIXEL
    if width > 2**31 - 1 or height > 2**31 - 1 or needed > free_bytes // 2:
        raise ChainZoomError(
            f"--format png: the last level is {width}x{height} ({width * height / 1e6:.0f} MP, about "
            f"{needed / 2**30:.1f} GiB to open) and only {free_bytes / 2**30:.1f} GiB of memory is free; "
            "use --format tiff or --format dzi, which are tiled"
        )


class FullRunFolder(RunFolder):
    """A full-image run folder: the local-zoom folder's checks, plus level files and tile caches."""

    RESULTS = "levels"

    def clear(self) -> None:
        super().clear()
        for path in self.path.glob("level_*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                remove_level(path)
        shutil.rmtree(self.path / CACHE, ignore_errors=True)
        shutil.rmtree(self.path / PARTIAL, ignore_errors=True)


def raw_level(folder: Path, index: int, size: tuple[int, int]) -> RawLevel:
    return RawLevel(Path(folder) / f"level_{index:02d}.work.tif", *size)


def level_size(size: tuple[int, int], step: int, index: int) -> tuple[int, int]:
    return size[0] * step**index, size[1] * step**index


def zoom_full(
    image: LoadedImage,
    job: ZoomJob,
    executor: TileExecutor,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: TileCallback | None = None,
) -> dict:
    """Make (or finish) ``job``'s full-image run in its ``out``; return its manifest.

    The job's request identifies the run (a rerun with a different one is refused unless
    ``overwrite``). Level 0 is the input itself (8-bit RGB; an alpha channel is dropped).
    ``on_tile(level, done, total)`` is called as tiles finish. The tiles are made by
    ``executor`` (in this process or on Ray actors); the executor is not part of the
    request, so a run started on one resumes on the other.
    """
    config = job.config
    if not isinstance(config, FullConfig):
        raise TypeError("zoom_full takes a full-image job")
    levels = level_count(config.scale, executor.scale)
    if config.format == "png":
        check_png_fits(level_size(image.size, executor.scale, levels), free_memory_bytes(torch.device("cpu")))
    folder = FullRunFolder(Path(config.out))
    previous = folder.prepare(job.request(), config.overwrite)
    try:
        check_same_marking(folder, previous, job)
        return _make_levels(folder, previous, image, job, config, executor, levels, tile, overlap, on_tile)
    finally:
        folder.close()


def _make_levels(
    folder: FullRunFolder,
    previous: dict[str, Any] | None,
    image: LoadedImage,
    job: ZoomJob,
    config: FullConfig,
    executor: TileExecutor,
    levels: int,
    tile: int,
    overlap: int,
    on_tile: TileCallback | None,
) -> dict[str, Any]:
    step = executor.scale
    fmt = config.format
    consistency = config.consistency
    per_tile = "none" if consistency == "anchor" else consistency  # anchor runs on the assembled level
    samples = to_samples(image.rgb)  # level 0, and for anchor what every level is pulled to
    anchor_to = from_samples(samples) if consistency == "anchor" else None
    manifest: dict[str, Any] = {
        **manifest_header(previous, job),
        "mode": "full",
        "backbone": executor.backbone_record(),
        "prompter": executor.prompter_settings(),
        "executor": executor.record(),
        "format": fmt,
        "tile": tile,
        "tile_overlap": overlap,
        "consistency": method_record(consistency, full=True),
        "levels": (previous or {}).get("levels", []),
        "complete": False,
    }
    sizes = [level_size(image.size, step, index) for index in range(levels + 1)]
    if not manifest["levels"]:
        raw = raw_level(folder.path, 0, sizes[0])
        raw.create()
        raw.write(0, 0, samples)
        _finish_level(folder.path, manifest, raw, step, fmt, {"tiles": 0, "seconds": 0.0}, job)
    _remove_spent(folder.path, sizes, len(manifest["levels"]))
    for index in range(len(manifest["levels"]), levels + 1):
        started = time.perf_counter()
        source = raw_level(folder.path, index - 1, sizes[index - 1])
        if not source.exists():
            raise ChainZoomError(f"{source.path} (level {index - 1}) is missing or truncated; rerun with --overwrite")
        target = raw_level(folder.path, index, sizes[index])
        cache = folder.path / CACHE / f"level_{index:02d}"
        xs = plan_axis(source.width, tile, overlap, step)
        ys = plan_axis(source.height, tile, overlap, step)
        stats = make_tiles(source, cache, xs, ys, index, executor, on_tile, per_tile)
        target.create()
        assemble(target, cache, xs, ys)
        if anchor_to is not None:
            anchored = time.perf_counter()
            window = max(1, round(xs.size / step**index))
            anchor_level(target, anchor_to, step**index, window)
            stats["anchor_window"] = window
            stats["anchor_seconds"] = round(time.perf_counter() - anchored, 3)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        _finish_level(folder.path, manifest, target, step, fmt, stats, job)
        _remove_spent(folder.path, sizes, index + 1)
    raw_level(folder.path, levels, sizes[levels]).path.unlink(missing_ok=True)
    shutil.rmtree(folder.path / CACHE, ignore_errors=True)
    manifest["complete"] = True
    atomic_write_json(folder.manifest_path, manifest)
    return manifest


def _finish_level(folder: Path, manifest: dict, raw: RawLevel, step: int, fmt: str, stats: dict, job: ZoomJob) -> None:
    """Write the level's pyramid and record it: from here on a rerun starts at the next level.

    Level 0 is the input's own pixels (not marked as generated); a level's tiles may have
    prompts of their own, so its marking names none.
    """
    index = len(manifest["levels"])
    path = level_path(folder, index, fmt)
    write_level(raw, path, fmt, job.marking(float(step**index), generated=index > 0, what="level"))
    manifest["levels"].append(
        {
            "index": index,
            "magnification": step**index,
            "size": [raw.width, raw.height],
            "file": path.name,
            **stats,
        }
    )
    atomic_write_json(folder / MANIFEST, manifest)


def _remove_spent(folder: Path, sizes: list[tuple[int, int]], finished: int) -> None:
    """Delete what finished levels no longer need: every raw file but the newest, and their tile caches.

    Safe to call again after a kill at any point: it only removes what a rerun would not read.
    """
    for index in range(finished - 1):
        raw_level(folder, index, sizes[index]).path.unlink(missing_ok=True)
    for index in range(finished):
        shutil.rmtree(folder / CACHE / f"level_{index:02d}", ignore_errors=True)


def make_tiles(
    source: RawLevel,
    cache: Path,
    xs: AxisPlan,
    ys: AxisPlan,
    level: int,
    executor: TileExecutor,
    on_tile: TileCallback | None = None,
    consistency: str = "none",
) -> dict:
    """Upscale every tile of ``source`` not already in ``cache``; prompts go to ``prompts.json``.

    The tiles are made by ``executor`` (here or on Ray actors); this process reads their inputs and writes every result as it comes back, so only
    the tiles in flight are ever held in memory.
    """
    cache.mkdir(parents=True, exist_ok=True)
    jobs = tile_jobs(xs, ys, level, consistency)
    total = len(jobs)
    todo = [job for job in jobs if not (cache / f"{job.name}.npy").exists()]
    done = total - len(todo)
    if on_tile is not None and done:
        on_tile(level, done, total)
    backbone_seconds = 0.0
    inputs = partial(tile_input, source, context=executor.uses_prompter)
    for job, result in executor.map_tiles(todo, inputs):
        save_tile(cache, job, result)
        backbone_seconds += result.seconds
        done += 1
        if on_tile is not None:
            on_tile(level, done, total)
    _collect_prompts(cache, xs, ys)
    return {
        "tiles": total,
        "tiles_made": len(todo),
        "backbone_seconds": round(backbone_seconds, 3),
        "workers": _collect_workers(cache),
    }


def tile_jobs(xs: AxisPlan, ys: AxisPlan, level: int, consistency: str = "none") -> list[TileJob]:
    """Every tile of a level, row by row."""
    return [
        TileJob(level, iy, ix, x, y, xs.size, ys.size, xs.scale, _local_keep(xs, ix), _local_keep(ys, iy), consistency)
        for iy, y in enumerate(ys.starts)
        for ix, x in enumerate(xs.starts)
    ]


def tile_input(source: RawLevel, job: TileJob, context: bool) -> TileInput:
    """A tile's pixels from the previous level, and its neighbourhood when it is prompted."""
    crop = source.read(job.x, job.y, job.width, job.height)
    return TileInput(crop, prompt_context(source, job.x, job.y, job.width, job.height) if context else None)


def save_tile(cache: Path, job: TileJob, result: TileResult) -> None:
    """Cache a finished tile (its prompt first, the tile last: the ``.npy`` marks it done) and who made it."""
    path = cache / f"{job.name}.npy"
    if result.prompt is not None:
        atomic_write(path.with_suffix(".txt"), partial(Path.write_text, data=result.prompt, encoding="utf-8"))
    atomic_write(path, partial(np.save, arr=result.kept))
    # One short line appended per tile; a line torn by a kill is skipped when read back.
    fd = os.open(cache / WORKERS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job.name}\t{result.worker}\n".encode())
    finally:
        os.close(fd)


def _collect_workers(cache: Path) -> dict[str, list[str]]:
    """Worker -> the tiles it made, from the cache's log (tiles of earlier, killed runs included)."""
    made: dict[str, str] = {}
    log = cache / WORKERS_LOG
    if log.exists():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, worker = line.partition("\t")
            if TILE_NAME.fullmatch(name) and worker and "\t" not in worker and (cache / f"{name}.npy").exists():
                made[name] = worker
    workers: dict[str, list[str]] = {}
    for name in sorted(made):
        workers.setdefault(made[name], []).append(name)
    return workers


def _local_keep(axis: AxisPlan, index: int) -> tuple[int, int]:
    a, b = axis.keep[index]
    offset = axis.starts[index] * axis.scale
    return a - offset, b - offset


def prompt_context(source: RawLevel, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """The tile's neighbourhood at the previous level, shown at the tile's size.

    The neighbourhood is :data:`PROMPT_CONTEXT` tiles on a side centred on the tile
    (shifted to stay inside the level), so the prompter sees the same pair of images
    (wider context, region to upscale) as in a local zoom.
    """
    nw, nh = min(width * PROMPT_CONTEXT, source.width), min(height * PROMPT_CONTEXT, source.height)
    nx = min(max(x + width // 2 - nw // 2, 0), source.width - nw)
    ny = min(max(y + height // 2 - nh // 2, 0), source.height - nh)
    return resize(from_samples(source.read(nx, ny, nw, nh)), (width, height), "bicubic")


def _collect_prompts(cache: Path, xs: AxisPlan, ys: AxisPlan) -> None:
    """Gather the tiles' prompts into ``prompts.json`` (tile boxes in previous-level px)."""
    records = []
    for iy, y in enumerate(ys.starts):
        for ix, x in enumerate(xs.starts):
            text = cache / f"y{iy:05d}_x{ix:05d}.txt"
            if text.exists():
                records.append({"box": [x, y, xs.size, ys.size], "prompt": text.read_text(encoding="utf-8")})
    if records:
        atomic_write_json(cache.parent.parent / f"{cache.name}_prompts.json", {"tiles": records})


def anchor_level(target: RawLevel, image: torch.Tensor, magnification: int, window: int) -> None:
    """``--consistency anchor`` for a whole level, in place: the level's colours pulled to the input's.

    Two passes over the level file in blocks of whole input px: the first averages it down to
    the input's size; the shift field (:func:`chainzoom.pipeline.consistency.anchor_shift`)
    is then resampled (bilinear, continuous across blocks) and added in the second. Memory is
    a block and the input-sized field. A kill between the passes is safe: a rerun assembles
    the level again from its cached tiles.
    """
    height, width = image.shape[-2:]
    side = max(1, ANCHOR_BLOCK // magnification)
    blocks = [
        (x, y, min(side, width - x), min(side, height - y))
        for y in range(0, height, side)
        for x in range(0, width, side)
    ]
    thumbnail = torch.empty(3, height, width)
    for x, y, w, h in blocks:
        pixels = target.read(x * magnification, y * magnification, w * magnification, h * magnification)
        means = pixels.reshape(h, magnification, w, magnification, 3).mean((1, 3), dtype=np.float64) / 255.0
        thumbnail[:, y : y + h, x : x + w] = torch.from_numpy(means).permute(2, 0, 1).float()
    shift = anchor_shift(image, thumbnail, window)
    for x, y, w, h in blocks:
        size = (w * magnification, h * magnification)
        field = resize_signed(shift, size, "bilinear", Box(x, y, x + w, y + h)).permute(1, 2, 0).numpy()
        pixels = target.read(x * magnification, y * magnification, *size).astype(np.float32)
        target.write(
            x * magnification, y * magnification, np.rint(pixels + field * 255.0).clip(0, 255).astype(np.uint8)
        )


def assemble(target: RawLevel, cache: Path, xs: AxisPlan, ys: AxisPlan) -> None:
    """Blend the cached tiles into ``target``, one cell at a time."""
    for r0, r1 in ys.cells:
        rows = ys.reaching(r0, r1)
        for c0, c1 in xs.cells:
            total = np.zeros((r1 - r0, c1 - c0, 1), dtype=np.float32)
            blended = np.zeros((r1 - r0, c1 - c0, 3), dtype=np.float32)
            for iy in rows:
                for ix in xs.reaching(c0, c1):
                    tile = np.load(cache / f"y{iy:05d}_x{ix:05d}.npy", mmap_mode="r")
                    (ay, by), (ax, bx) = ys.keep[iy], xs.keep[ix]
                    top, bottom, left, right = max(r0, ay), min(r1, by), max(c0, ax), min(c1, bx)
                    weight = np.outer(ys.weights[iy][top - ay : bottom - ay], xs.weights[ix][left - ax : right - ax])
                    part = tile[top - ay : bottom - ay, left - ax : right - ax].astype(np.float32)
                    blended[top - r0 : bottom - r0, left - c0 : right - c0] += part * weight[..., None]
                    total[top - r0 : bottom - r0, left - c0 : right - c0, 0] += weight
            target.write(c0, r0, np.rint(blended / total).clip(0, 255).astype(np.uint8))
