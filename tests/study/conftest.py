"""Run folders of three interpolation "methods" on three bundled photos, and a study of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from chainzoom.api import ChainZoom
from chainzoom.runtime import Runtime
from chainzoom.study.create import create_study

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = [
    ROOT / "assets" / "sample.jpg",
    ROOT / "assets" / "photos" / "coffee.png",
    ROOT / "assets" / "photos" / "astronaut.png",
]
METHODS = ("bicubic", "nearest", "lanczos")


def small_inputs(root: Path) -> list[Path]:
    """160x120 crops of the bundled photos: the study's logic does not need big images, the machine is slow."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for photo in PHOTOS:
        path = root / f"{photo.stem}.png"
        with Image.open(photo) as image:
            image.convert("RGB").crop((100, 60, 260, 180)).save(path)
        paths.append(path)
    return paths


def make_runs(root: Path, methods=METHODS, scale: float = 64.0, center=(0.45, 0.4)) -> dict[str, Path]:
    """One folder per method holding one run folder per photo (what ``chainzoom zoom A B C`` writes)."""
    folders = {}
    inputs = small_inputs(root / "inputs")
    for method in methods:
        pipeline = ChainZoom(backbone=method, prompter="null", runtime=Runtime(device="cpu"))
        for photo in inputs:
            pipeline(photo, scale, center, out=root / method / photo.stem, animation=False)
        folders[method] = root / method
    return folders


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def study(runs, tmp_path) -> Path:
    create_study(runs, tmp_path / "study", seed=1)
    return tmp_path / "study"
