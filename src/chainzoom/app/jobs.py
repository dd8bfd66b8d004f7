"""The app's work, without any web framework: uploads, run folders, the model cache, downloads.

The app keeps everything in one folder::

    FOLDER/inputs/SHA/NAME.EXT   uploads that passed the checks (one copy per content, with the user's name)
    FOLDER/runs/NAME/            ordinary run folders of chainzoom zoom (manifest, step PNGs, strip, animation)
    FOLDER/downloads/NAME.zip    a run folder zipped for download
    FOLDER/cache/                Gradio's cache: uploads as they arrive, the images the page shows

A run's folder name is made from its job (input, scale, centre, mode, models), so the
same job asked again resumes or reuses its folder (``chainzoom zoom`` semantics); a
run the app was stopped in the middle of is listed as unfinished and resumed the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainzoom.config import DEFAULT_CONSISTENCY
from chainzoom.errors import ChainZoomError, InputError
from chainzoom.io.atomic import atomic_write
from chainzoom.runs.manifest import MANIFEST

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from PIL import Image

    from chainzoom.api import ChainZoom
    from chainzoom.core.states import ScaleState

#: Largest image the app takes (pixels): more than a browser shows well, far less than a bomb.
DEFAULT_MAX_PIXELS = 40_000_000
#: Long side of the preview the user clicks on (the click is mapped back to fractions).
PREVIEW_SIDE = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Upload:
    """An accepted input: where the app keeps it, its size, and its name as the user gave it."""

    path: Path
    size: tuple[int, int]
    name: str


@dataclass(frozen=True)
class Job:
    """One zoom the user asked for (what names its run folder)."""

    input: Path
    scale: float
    center: tuple[float, float]
    mode: str
    backbone: str
    prompter: str
    #: After each chain step (``none`` for the baselines, which have no steps to correct).
    consistency: str = DEFAULT_CONSISTENCY

    def folder_name(self) -> str:
        # An accepted input's folder is its content hash (inputs/SHA/NAME): two photos of one name
        # differ, and the name stays the same when the app's folder is moved.
        identity = json.dumps(
            [
                f"{self.input.parent.name}/{self.input.name}",
                self.scale,
                self.center,
                self.mode,
                self.backbone,
                self.prompter,
                self.consistency,
            ]
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
        stem = _UNSAFE.sub("-", self.input.stem)[:40] or "image"
        return f"{stem}-x{self.scale:g}-{self.mode}-{digest}"


class AppFolder:
    """The app's folder: accepted inputs, run folders and downloads."""

    def __init__(self, root: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root).resolve()
        self.inputs = self.root / "inputs"
        self.runs = self.root / "runs"
        self.downloads = self.root / "downloads"
        self.cache = self.root / "cache"
        self.max_pixels = max_pixels

    def accept(self, path: str | Path, name: str | None = None) -> Upload:
        """Check an uploaded file with chainzoom's image loading and keep a copy; raise InputError.

        Everything is checked (a readable image, not a bomb, not above ``max_pixels``)
        before anything is written, so a refused upload leaves the folder as it was: a
        refused file in Gradio's cache (:attr:`cache`) is deleted too.
        """
        from chainzoom.io.digest import file_sha256
        from chainzoom.io.images import load_image

        source = Path(path)
        shown = name or source.name
        try:
            loaded = load_image(source, max_pixels=self.max_pixels)
        except InputError as exc:  # name the file as the user knows it, not by its temporary path
            self._forget(source)
            raise InputError(str(exc).replace(str(source), shown)) from None
        stem = _UNSAFE.sub("-", Path(shown).stem)[:60] or "image"
        target = self.inputs / file_sha256(source)[:16] / f"{stem}{source.suffix.lower()}"
        if not target.exists():
            atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
        return Upload(target, loaded.size, shown)

    def _forget(self, upload: Path) -> None:
        """Delete a refused upload from Gradio's cache, and its folder there when that is left empty."""
        try:
            upload = upload.resolve()
            if not upload.is_relative_to(self.cache.resolve()) or not upload.is_file():
                return
            upload.unlink()
            if upload.parent != self.cache.resolve() and not any(upload.parent.iterdir()):
                upload.parent.rmdir()
        except OSError:  # gone already, or not ours to delete: nothing kept either way
            pass

    def run_path(self, run: str) -> Path:
        """The folder of the run named ``run`` (a name from :meth:`previous_runs`); raise ChainZoomError."""
        folder = self.runs / run
        if _UNSAFE.sub("", run) != run or run.startswith(".") or not (folder / MANIFEST).is_file():
            raise ChainZoomError(f"no run {run[:80]!r} in this app's folder")
        return folder

    def run_folder(self, job: Job) -> Path:
        return self.runs / job.folder_name()

    def previous_runs(self) -> list[dict[str, Any]]:
        """Every run folder with what it holds, newest first; an unreadable one says so."""
        rows = []
        folders = [p for p in self.runs.glob("*") if (p / MANIFEST).is_file()] if self.runs.is_dir() else []
        for folder in sorted(folders, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True):
            try:
                manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
                request = manifest["request"]
                rows.append(
                    {
                        "run": folder.name,
                        "input": Path(str(manifest.get("input", ""))).name,
                        "scale": request.get("scale"),
                        "mode": request.get("mode"),
                        "backbone": request.get("backbone"),
                        "prompter": request.get("prompter"),
                        "consistency": request.get("consistency"),
                        "states": f"{len(manifest.get('states', []))} of {len(manifest['plan']['steps']) + 1}",
                        "complete": bool(manifest.get("complete")),
                    }
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                rows.append({"run": folder.name, "input": f"unreadable manifest ({exc})", "complete": False})
        return rows

    def job_of(self, run: str) -> Job:
        """The job a run folder was made by (to resume it)."""
        folder = self.run_path(run)
        from chainzoom.job import ZoomJob

        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        source = Path(manifest["input"])
        moved = self.inputs / source.parent.name / source.name  # the app's folder was moved since
        config = ZoomJob.read(manifest["request"], str(source), str(folder / MANIFEST)).zoom
        center = config.center
        if isinstance(center, str):
            raise ChainZoomError(f"run {run!r} zooms into a point in pixels, which the app does not take")
        return Job(
            source if source.exists() or not moved.exists() else moved,
            config.scale,
            center,
            config.mode,
            config.backbone_spec,
            config.prompter_spec,
            config.consistency,
        )

    def zip_run(self, folder: Path) -> Path:
        """The run folder as ``downloads/NAME.zip`` (written atomically): its files, no lock or temporaries."""
        target = self.downloads / f"{folder.name}.zip"

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # PNG/WebP: compressed already
                for path in sorted(folder.iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        archive.write(path, f"{folder.name}/{path.name}")

        return atomic_write(target, write)


class ModelCache:
    """One model set in memory: the pipeline of the last backbone and prompter asked for.

    Jobs run one at a time (the app's queue), so a second set is never needed at once;
    asking for another pair drops the first before loading it.
    """

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._key: tuple[str, str] | None = None
        self._pipeline: ChainZoom | None = None
        self._lock = threading.Lock()

    def get(self, backbone: str, prompter: str) -> ChainZoom:
        from chainzoom.api import ChainZoom
        from chainzoom.runtime import Runtime

        with self._lock:
            if self._key != (backbone, prompter) or self._pipeline is None:
                self._pipeline = None  # free the old set first
                pipeline = ChainZoom(backbone, prompter, runtime=Runtime(device=self.device))
                self._pipeline, self._key = pipeline, (backbone, prompter)
            return self._pipeline

    @property
    def loaded(self) -> tuple[str, str] | None:
        return self._key


def run_job(folder: AppFolder, cache: ModelCache, job: Job) -> tuple[Path, int, Iterator[ScaleState]]:
    """The run folder, the number of states the run will have, and its states as they are made.

    Every option is checked (by the API's config classes) before the iterator is returned;
    closing the iterator early (a cancelled job) leaves a run that the same job resumes.
    """
    from chainzoom.runs import driver

    pipeline = cache.get(job.backbone, job.prompter)
    out = folder.run_folder(job)
    config = pipeline.job(job.input, scale=job.scale, center=job.center, mode=job.mode, consistency=job.consistency)
    zoom = driver.prepare(pipeline.models, job.input, config, out)
    return out, zoom.states_planned, driver.zoom_states(pipeline.models, zoom, out)


def preview(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image to click on: the input, shrunk to at most :data:`PREVIEW_SIDE` on its long side."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        shown = ImageOps.exif_transpose(image).convert("RGB")
    shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return shown


def mark(image: Image.Image, center: tuple[float, float]) -> Image.Image:
    """The preview with a cross-hair where the zoom will go."""
    from PIL import ImageDraw

    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    x, y = center[0] * marked.width, center[1] * marked.height
    arm = max(6, marked.width // 40)
    for width, colour in ((5, (0, 0, 0)), (2, (255, 255, 255))):
        draw.line([(x - arm, y), (x + arm, y)], fill=colour, width=width)
        draw.line([(x, y - arm), (x, y + arm)], fill=colour, width=width)
    return marked


def states_of(run: Path) -> list[dict[str, Any]]:
    """The states a run folder lists (finished ones only: the manifest is rewritten after each)."""
    try:
        manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(manifest.get("states", []))


def before_after(run: Path, index: int) -> tuple[Image.Image, Image.Image] | None:
    """State ``index`` and, before it, the same region of the state it was made from, only resized.

    What the step added over plain magnification, for the before/after slider; None for state 0.
    """
    from PIL import Image

    from chainzoom.core.geometry import Box

    states = states_of(run)
    if not 1 <= index < len(states):
        return None
    parent, child = states[index - 1], states[index]
    with Image.open(run / parent["file"]) as source:
        parent_image = source.convert("RGB")
    with Image.open(run / child["file"]) as source:
        after = source.convert("RGB")
    region = Box(*child["box"]).relative_to(Box(*parent["box"]), parent_image.size)
    before = parent_image.resize(after.size, Image.Resampling.BICUBIC, box=(region.x0, region.y0, region.x1, region.y1))
    return before, after


class Viewers:
    """The deep-zoom viewer (:mod:`chainzoom.viewer`) of each run asked for, one server per run on 127.0.0.1."""

    def __init__(self) -> None:
        self._servers: dict[Path, ThreadingHTTPServer] = {}
        self._lock = threading.Lock()

    def url(self, run: Path) -> str:
        from chainzoom.viewer.server import make_server, url_of

        run = run.resolve()
        with self._lock:
            if run not in self._servers:
                server = make_server(run, 0)
                threading.Thread(target=server.serve_forever, daemon=True, name=f"viewer {run.name}").start()
                self._servers[run] = server
            return url_of(self._servers[run])

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.shutdown()
                server.server_close()
            self._servers.clear()
