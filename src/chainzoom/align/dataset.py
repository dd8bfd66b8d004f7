"""Training pairs: the (previous state, zoomed view) pairs a prompter sees in real use.

Each training image is zoomed with the real chain (:func:`chainzoom.api.run_states`)
and a recording prompter keeps every :class:`PromptContext` the chain asks about, so
the policy is trained on exactly the images it will be shown at inference: the same
crops, the same resizing, the same 8-bit rounding (:func:`context_images`). The chain
runs with a null prompt (the policy being trained cannot write the prompts yet); with
``--backbone bicubic`` it costs almost nothing, with the default backbone the views
carry the SR model's own texture, as they will at inference.

The pairs are written as PNG files with a ``pairs.json`` index, so a resumed run (or
a second run with other training settings) reuses them instead of zooming again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from chainzoom.align.rewards import ImagePair
from chainzoom.errors import OptionError
from chainzoom.io.atomic import atomic_write, atomic_write_json
from chainzoom.prompts.message import context_images
from chainzoom.prompts.recording import RecordingPrompter
from chainzoom.runtime import Runtime

PAIRS_INDEX = "pairs.json"


@dataclass(frozen=True)
class PairSettings:
    """Everything that decides which pairs are made; a changed setting rebuilds them."""

    images: tuple[str, ...]
    backbone: str
    scale: float
    view: int | None
    centers: int
    seed: int


@dataclass(frozen=True)
class PairRecord:
    """One pair on disk: where its images came from and where they are."""

    source: str
    center: tuple[float, float]
    step: int
    wide: str
    view: str


def zoom_centers(count: int, rng: random.Random) -> list[tuple[float, float]]:
    """The image centre first, then seeded random points away from the border."""
    return [(0.5, 0.5)] + [(rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)) for _ in range(count - 1)]


def build_pairs(settings: PairSettings, folder: Path, runtime: Runtime, **backbone_options: Any) -> list[PairRecord]:
    """Zoom every image at every centre and write each step's pair under ``folder``."""
    from chainzoom.core.geometry import default_view, plan_zoom, resolve_center, resolve_view
    from chainzoom.io.images import load_image
    from chainzoom.pipeline.chain import run_states
    from chainzoom.pipeline.components import build_backbone

    if settings.centers < 1:
        raise OptionError("centers", f"must be at least 1, got {settings.centers}")
    backbone = build_backbone(settings.backbone, runtime, **backbone_options)
    # Pairs of other settings go first: the index is their only owner, and it is rewritten.
    (folder / PAIRS_INDEX).unlink(missing_ok=True)
    for stale in [*folder.glob("*_wide.png"), *folder.glob("*_view.png")]:
        stale.unlink()
    rng = random.Random(settings.seed)
    records: list[PairRecord] = []
    for source in settings.images:
        image = load_image(source)
        size, factor = image.size, backbone.scale
        view = resolve_view(settings.view, size, factor) if settings.view else default_view(size, factor)
        for center in zoom_centers(settings.centers, rng):
            plan = plan_zoom(size, settings.scale, resolve_center(center, size), view, factor)
            recorder = RecordingPrompter()
            for _ in run_states("chain", image, plan, backbone, recorder):
                pass
            for context in recorder.contexts:
                wide, zoomed = context_images(context)
                stem = f"{len(records):05d}"
                wide_name = _save(folder / f"{stem}_wide.png", wide)
                view_name = _save(folder / f"{stem}_view.png", zoomed)
                records.append(PairRecord(source, center, context.step, wide_name, view_name))
    atomic_write_json(folder / PAIRS_INDEX, {"settings": asdict(settings), "pairs": [asdict(r) for r in records]})
    return records


def _save(path: Path, image: Image.Image) -> str:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path.name


def load_or_build_pairs(
    settings: PairSettings, folder: Path, runtime: Runtime, **backbone_options: Any
) -> list[PairRecord]:
    """The pairs already in ``folder`` if they were made with ``settings``, else new ones."""
    index = folder / PAIRS_INDEX
    if index.is_file():
        saved = json.loads(index.read_text(encoding="utf-8"))
        # Through JSON, so the tuples in ``settings`` compare equal to the saved lists.
        if saved.get("settings") == json.loads(json.dumps(asdict(settings))):
            return [PairRecord(**{**r, "center": tuple(r["center"])}) for r in saved["pairs"]]
    return build_pairs(settings, folder, runtime, **backbone_options)


def open_pair(record: PairRecord, folder: Path) -> ImagePair:
    """The pair's two images as RGB PIL images."""
    return (
        Image.open(folder / record.wide).convert("RGB"),
        Image.open(folder / record.view).convert("RGB"),
    )


def pair_images(records: Sequence[PairRecord], folder: Path) -> list[ImagePair]:
    return [open_pair(r, folder) for r in records]
