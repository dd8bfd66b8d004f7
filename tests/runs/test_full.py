"""Full-image mode: streamed tiles equal the untiled result, pyramids open, a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chainzoom.backbones import create_backbone
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.cli import build_parser
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import LoadedImage, from_samples, load_image, to_samples
from chainzoom.prompts.base import Prompter
from chainzoom.runs.full import level_count, plan_axis
from chainzoom.runtime import Runtime

from ..fullrun import make_full_run

pyvips = pytest.importorskip("pyvips", reason="full-image mode needs the [tiles] extra (pyvips)")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"


def sample(width: int, height: int, left: int = 150, top: int = 80) -> LoadedImage:
    """A detailed crop of the bundled photo (fur and eyes: tile seams would show)."""
    rgb = load_image(SAMPLE).rgb[:, top : top + height, left : left + width].contiguous()
    return LoadedImage(rgb, None, 8, None)


def png_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def untiled(backbone: Backbone, pixels: np.ndarray) -> np.ndarray:
    """The backbone on the whole image at once, rounded to 8 bits."""
    return to_samples(backbone.upscale(from_samples(pixels.astype(np.uint8)))).astype(np.int16)


class Counting(Backbone):
    """Wraps a backbone and counts its calls (tiles actually computed)."""

    def __init__(self, inner: Backbone) -> None:
        self.inner, self.scale, self.calls = inner, inner.scale, 0

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        self.calls += 1
        return self.inner.upscale(image, prompt)

    def card(self) -> ModelCard:
        return self.inner.card()


def test_cells_partition_each_axis_and_every_pixel_has_weight() -> None:
    axis = plan_axis(300, 64, 24, 4)
    assert axis.cells[0][0] == 0 and axis.cells[-1][1] == 1200
    assert all(a[1] == b[0] for a, b in zip(axis.cells, axis.cells[1:]))
    coverage = np.zeros(1200)
    for (a, b), weight in zip(axis.keep, axis.weights):
        coverage[a:b] += weight
    np.testing.assert_allclose(coverage, 1.0, atol=1e-6)


def test_the_working_file_is_a_tiff_that_tiles_write_into(tmp_path: Path) -> None:
    from chainzoom.runs.pyramid import RawLevel

    pixels = np.random.default_rng(0).integers(0, 256, (45, 37, 3), dtype=np.uint8)
    level = RawLevel(tmp_path / "work.tif", 37, 45)  # 45 rows: two full strips of 16 and one of 13
    level.create()
    level.write(0, 0, pixels[:20])
    level.write(5, 20, pixels[20:, 5:])
    level.write(0, 20, pixels[20:, :5])
    assert np.array_equal(level.read(5, 7, 10, 30), pixels[7:37, 5:15])
    streamed = pyvips.Image.new_from_file(str(level.path), access="sequential")
    assert np.array_equal(np.ndarray(buffer=streamed.write_to_memory(), dtype=np.uint8, shape=(45, 37, 3)), pixels)
    tifffile = pytest.importorskip("tifffile")
    assert np.array_equal(tifffile.imread(level.path), pixels)


@pytest.mark.slow
def test_two_bicubic_levels_equal_untiled_within_one_level(tmp_path: Path) -> None:
    image = sample(150, 110)
    backbone = create_backbone("bicubic", Runtime(device="cpu"))
    manifest = make_full_run(
        image, tmp_path, backbone, None, levels=2, fmt="png", tile=48, overlap=24, request={"test": 1}
    )
    assert manifest["complete"] and [level["size"] for level in manifest["levels"]] == [
        [150, 110],
        [600, 440],
        [2400, 1760],
    ]
    assert manifest["levels"][2]["tiles"] > 100  # really tiled, in both directions
    level0 = png_pixels(tmp_path / "level_00.png")
    assert np.array_equal(level0, to_samples(image.rgb).astype(np.int16))
    for index in (1, 2):
        previous = png_pixels(tmp_path / f"level_{index - 1:02d}.png")
        level = png_pixels(tmp_path / f"level_{index:02d}.png")
        assert np.abs(level - untiled(backbone, previous)).max() <= 1
    # Only pyramids and the manifest remain: raw levels and tile caches are removed.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "level_00.png",
        "level_01.png",
        "level_02.png",
        "manifest.json",
    ]


@pytest.mark.slow
def test_realesrgan_tiles_equal_untiled_within_one_level(tmp_path: Path) -> None:
    # 78 input px of context on each side of the seam: RRDBNet's far-reaching receptive field
    # put this crop 1.6/255 off with 51 px, 0.4/255 with 78 (measured, float, untiled vs tiled).
    image = sample(224, 64, 150, 140)
    backbone = create_backbone("realesrgan", Runtime(device="cpu", dtype="float32"))
    manifest = make_full_run(image, tmp_path, backbone, None, levels=1, fmt="png", tile=192, overlap=160, request={})
    assert manifest["levels"][1]["tiles"] == 2
    level = png_pixels(tmp_path / "level_01.png")
    reference = untiled(backbone, to_samples(image.rgb))
    assert np.abs(level - reference).max() <= 1


@pytest.mark.slow
def test_tiff_and_dzi_pyramids_open_with_the_right_size_and_levels(tmp_path: Path) -> None:
    image = sample(200, 130)
    backbone = create_backbone("bicubic", Runtime(device="cpu"))
    make_full_run(image, tmp_path / "tiff", backbone, None, levels=2, fmt="tiff", tile=256, overlap=32, request={})
    tiff = tmp_path / "tiff" / "level_02.tif"
    opened = pyvips.Image.new_from_file(str(tiff))
    assert (opened.width, opened.height, opened.bands) == (3200, 2080, 3)
    pages = opened.get("n-pages")
    assert pages >= 4  # 3200 -> 1600 -> 800 -> 400 -> 200...
    smallest = pyvips.Image.new_from_file(str(tiff), page=pages - 1)
    assert smallest.width == pytest.approx(3200 / 2 ** (pages - 1), abs=1)
    # The pyramid is lossy (JPEG) but close to the level it was made from.
    full = np.ndarray(buffer=opened.write_to_memory(), dtype=np.uint8, shape=(2080, 3200, 3)).astype(np.int16)
    level1 = np.ndarray(
        buffer=pyvips.Image.new_from_file(str(tmp_path / "tiff" / "level_01.tif")).write_to_memory(),
        dtype=np.uint8,
        shape=(520, 800, 3),
    )
    assert np.abs(full - untiled(backbone, level1)).mean() < 3
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffFile(tiff) as handle:
        series = handle.series[0]
        assert series.levels[0].shape == (2080, 3200, 3)
        assert len(series.levels) == pages
        assert all(page.is_tiled for page in handle.pages)

    make_full_run(image, tmp_path / "dzi", backbone, None, levels=1, fmt="dzi", tile=256, overlap=32, request={})
    dzi = tmp_path / "dzi" / "level_01.dzi"
    root = ET.parse(dzi).getroot()
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (800, 520)
    levels = sorted(int(p.name) for p in (tmp_path / "dzi" / "level_01_files").iterdir() if p.is_dir())
    assert levels == list(range(11))  # ceil(log2(800)) = 10, down to 1x1
    deepest = list((tmp_path / "dzi" / "level_01_files" / "10").glob("*.jpg"))
    assert len(deepest) == 4 * 3  # 800/254 -> 4 columns, 520/254 -> 3 rows


RESUMED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.fullrun import make_full_run
    from tests.runs.test_full import sample
    from chainzoom.backbones import create_backbone
    from chainzoom.runtime import Runtime

    bicubic = create_backbone("bicubic", Runtime(device="cpu"))

    class Slow(type(bicubic)):
        def upscale(self, image, prompt=""):
            time.sleep(0.1)
            return super().upscale(image, prompt)

    make_full_run(sample(120, 100), Path(sys.argv[1]), Slow("bicubic"), None, levels=1, fmt="png",
              tile=32, overlap=12, request={"resume": 1})
    """
)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_tiles(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", RESUMED_RUN, str(out), str(ROOT)], env=env)
    cache = out / "tiles" / "level_01"
    deadline = time.monotonic() + 60
    while len(list(cache.glob("y*.npy"))) < 10 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = len(list(cache.glob("y*.npy")))
    assert 10 <= finished < 30, "the child was killed mid-level"
    assert not (out / "level_01.png").exists()

    backbone = Counting(create_backbone("bicubic", Runtime(device="cpu")))
    manifest = make_full_run(
        sample(120, 100), out, backbone, None, levels=1, fmt="png", tile=32, overlap=12, request={"resume": 1}
    )
    assert manifest["levels"][1]["tiles"] == 30  # 6 columns x 5 rows
    assert backbone.calls == 30 - finished
    reference = tmp_path / "reference"
    make_full_run(
        sample(120, 100), reference, backbone.inner, None, levels=1, fmt="png", tile=32, overlap=12, request={}
    )
    assert np.array_equal(png_pixels(out / "level_01.png"), png_pixels(reference / "level_01.png"))


@pytest.mark.slow
def test_an_interrupt_between_levels_resumes_at_the_next_level(tmp_path: Path) -> None:
    class StopAfter(Counting):
        def __init__(self, inner: Backbone, limit: int) -> None:
            super().__init__(inner)
            self.limit = limit

        def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
            if self.calls == self.limit:
                raise KeyboardInterrupt
            return super().upscale(image, prompt)

    args = dict(levels=2, fmt="png", tile=64, overlap=16, request={})
    bicubic = create_backbone("bicubic", Runtime(device="cpu"))
    first = StopAfter(bicubic, limit=2)  # level 1 of a 100x60 input is 2x1 tiles
    with pytest.raises(KeyboardInterrupt):
        make_full_run(sample(100, 60), tmp_path / "run", first, None, **args)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [level["index"] for level in manifest["levels"]] == [0, 1] and not manifest["complete"]
    assert not (tmp_path / "run" / "level_00.work.tif").exists()  # no longer needed: level 1 is made
    second = Counting(bicubic)
    done = make_full_run(sample(100, 60), tmp_path / "run", second, None, **args)
    assert second.calls == done["levels"][2]["tiles"]
    make_full_run(sample(100, 60), tmp_path / "reference", bicubic, None, **args)
    for name in ("level_01.png", "level_02.png"):
        assert np.array_equal(png_pixels(tmp_path / "run" / name), png_pixels(tmp_path / "reference" / name))


def test_a_finished_run_is_not_redone_and_a_different_one_is_refused(tmp_path: Path) -> None:
    backbone = Counting(create_backbone("bicubic", Runtime(device="cpu")))
    args = dict(levels=1, fmt="png", tile=64, overlap=16, request={"a": 1})
    make_full_run(sample(80, 60), tmp_path, backbone, None, **args)
    calls = backbone.calls
    make_full_run(sample(80, 60), tmp_path, backbone, None, **args)
    assert backbone.calls == calls
    with pytest.raises(ChainZoomError, match="different arguments"):
        make_full_run(sample(80, 60), tmp_path, backbone, None, **{**args, "request": {"a": 2}})
    make_full_run(sample(80, 60), tmp_path, backbone, None, **{**args, "fmt": "dzi", "overwrite": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "level_00.dzi",
        "level_00_files",
        "level_01.dzi",
        "level_01_files",
        "manifest.json",
    ]


class FailsAfter(Counting):
    """Counts like :class:`Counting`, and raises on call ``limit + 1``."""

    def __init__(self, inner: Backbone, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        if self.calls >= self.limit:
            raise RuntimeError("backbone failed")
        return super().upscale(image, prompt)


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_run_leaves_the_folder_as_it_found_it(tmp_path: Path) -> None:
    backbone = create_backbone("bicubic", Runtime(device="cpu"))
    args = dict(levels=1, fmt="png", tile=64, overlap=16, request={"a": 1})
    make_full_run(sample(80, 60), tmp_path, backbone, None, **args)
    before = every_file(tmp_path)
    assert ".chainzoom.lock" not in before
    with pytest.raises(ChainZoomError, match="different arguments"):
        make_full_run(sample(80, 60), tmp_path, backbone, None, **{**args, "request": {"a": 2}})
    (tmp_path / "manifest.json").write_text('{"made by": "another program"}')
    before = every_file(tmp_path)
    with pytest.raises(ChainZoomError, match="is not a chainzoom manifest"):
        make_full_run(sample(80, 60), tmp_path, backbone, None, **args)
    assert every_file(tmp_path) == before


def test_a_run_that_fails_before_its_first_level_leaves_no_folder(tmp_path: Path) -> None:
    """Level 0 is the input itself: a run whose backbone fails on level 1's first tile made nothing."""
    backbone = FailsAfter(create_backbone("bicubic", Runtime(device="cpu")), 0)
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="backbone failed"):
        make_full_run(sample(80, 60), out, backbone, None, levels=1, fmt="tiff", tile=32, overlap=8, request={})
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_later_keeps_its_levels_and_tiles_but_not_its_lock(tmp_path: Path) -> None:
    inner = create_backbone("bicubic", Runtime(device="cpu"))
    args = dict(levels=2, fmt="png", tile=32, overlap=8, request={})
    level1 = len(plan_axis(80, 32, 8, 4).starts) * len(plan_axis(60, 32, 8, 4).starts)
    backbone = FailsAfter(inner, level1 + 3)  # level 2 fails after 3 tiles of its own
    with pytest.raises(RuntimeError, match="backbone failed"):
        make_full_run(sample(80, 60), tmp_path, backbone, None, **args)
    assert [level["index"] for level in json.loads((tmp_path / "manifest.json").read_text())["levels"]] == [0, 1]
    assert len(list((tmp_path / "tiles" / "level_02").glob("*.npy"))) == 3
    assert not (tmp_path / ".chainzoom.lock").exists()
    resumed = Counting(inner)
    assert make_full_run(sample(80, 60), tmp_path, resumed, None, **args)["complete"]
    assert resumed.calls == len(plan_axis(320, 32, 8, 4).starts) * len(plan_axis(240, 32, 8, 4).starts) - 3
    assert not (tmp_path / ".chainzoom.lock").exists()


def test_each_tile_gets_its_own_prompt_from_its_neighbourhood(tmp_path: Path) -> None:
    from chainzoom.prompts.base import PromptContext

    class Brightness(Prompter):
        id = "brightness"

        def describe(self, context: PromptContext) -> str:
            assert context.wide.shape == context.view.shape
            return f"{context.step}:{context.view.mean():.3f}"

    image = sample(120, 60)
    make_full_run(
        image,
        tmp_path,
        create_backbone("bicubic", Runtime(device="cpu")),
        Brightness(),
        levels=1,
        fmt="png",
        tile=64,
        overlap=16,
        request={},
    )
    tiles = json.loads((tmp_path / "level_01_prompts.json").read_text())["tiles"]
    assert len(tiles) == 3  # columns start at 0, 48 and 56; one row
    for record in tiles:
        x, y, w, h = record["box"]
        assert record["prompt"] == f"1:{image.rgb[:, y : y + h, x : x + w].mean():.3f}"
    assert len({record["prompt"] for record in tiles}) == 3


def test_scale_must_be_a_power_of_the_step_and_big_png_is_refused(tmp_path: Path) -> None:
    assert level_count(64, 4) == 3
    with pytest.raises(ChainZoomError, match="power of 4"):
        level_count(32, 4)
    with pytest.raises(ChainZoomError, match="--format tiff or --format dzi"):
        make_full_run(
            sample(300, 200),
            tmp_path,
            create_backbone("bicubic", Runtime(device="cpu")),
            None,
            levels=8,
            fmt="png",
            request={},
        )
    assert not tmp_path.joinpath("manifest.json").exists()


def full_cli(out: Path, *extra: str) -> int:
    """``chainzoom zoom SAMPLE --full`` with the bicubic backbone, as the command line runs it."""
    args = build_parser().parse_args(
        [
            "zoom",
            str(SAMPLE),
            "--out",
            str(out),
            "--full",
            "--quiet",
            "--backbone",
            "bicubic",
            "--device",
            "cpu",
            *extra,
        ]
    )
    return args.handler(args)


def test_the_command_runs_a_full_zoom_and_refuses_local_flags(tmp_path: Path, capsys) -> None:
    assert full_cli(tmp_path, "--scale", "4", "--tile", "256", "--tile-overlap", "16") == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["request"]["kind"] == "full" and manifest["request"]["format"] == "tiff"
    assert manifest["request"]["consistency"] == "anchor"  # the default, as for the chain
    assert manifest["levels"][-1]["size"] == [1804, 1200]
    with pytest.raises(ChainZoomError, match="center: does not apply to zoom --full"):
        full_cli(tmp_path, "--center", "0.2,0.2")
    with pytest.raises(ChainZoomError, match="power of 4"):
        full_cli(tmp_path, "--scale", "8")


class Cast(Backbone):
    """Bicubic 4x plus a colour cast: what a consistency method must take out, tile by tile."""

    scale = 4

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        from chainzoom.core.resample import resize

        big = resize(image, (image.shape[-1] * 4, image.shape[-2] * 4), "bicubic")
        return (big + torch.tensor([0.12, -0.08, 0.05]).view(3, 1, 1)).clamp(0, 1)

    def card(self) -> ModelCard:
        return ModelCard("cast", "bicubic with a colour cast", "bicubic", 4)


def full_levels(tmp_path: Path, backbone: Backbone, method: str, scale: int) -> tuple[dict, list[torch.Tensor]]:
    from chainzoom.api import ChainZoom

    image_path = tmp_path / "in.png"
    if not image_path.exists():  # mid-tones, so that the cast never clips
        Image.fromarray(to_samples(0.2 + 0.6 * sample(96, 64).rgb)).save(image_path)
    out = tmp_path / f"{method}-{type(backbone).__name__}"
    manifest = ChainZoom(backbone, runtime=Runtime(device="cpu", tile=32, tile_overlap=16)).zoom_full(
        image_path, out, scale, format="png", consistency=method
    )
    return manifest, [load_image(out / level["file"]).rgb for level in manifest["levels"]]


def pooled(level: torch.Tensor, factor: int) -> torch.Tensor:
    """A level averaged down by ``factor`` (to the input's pixels)."""
    return torch.nn.functional.avg_pool2d(level[None], factor)[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wavelet", "backprojection", "anchor"])
def test_full_image_consistency_takes_a_colour_cast_out_of_every_tile(tmp_path: Path, method: str) -> None:
    level = {}
    for name in ("none", method):
        manifest, levels = full_levels(tmp_path, Cast(), name, 4)
        assert manifest["request"]["consistency"] == name and manifest["consistency"]["method"] == name
        level[name] = levels[1]
    source = levels[0].mean((1, 2))
    cast = (level["none"].mean((1, 2)) - source).abs().max()
    fixed = (level[method].mean((1, 2)) - source).abs().max()
    assert cast > 0.05 and fixed < 0.01


class Bicubic(Cast):
    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        from chainzoom.core.resample import resize

        return resize(image, (image.shape[-1] * 4, image.shape[-2] * 4), "bicubic")


@pytest.mark.slow
def test_full_image_anchor_holds_two_levels_to_the_input(tmp_path: Path) -> None:
    manifest, anchored = full_levels(tmp_path, Cast(), "anchor", 16)
    _, drifting = full_levels(tmp_path, Cast(), "none", 16)
    _, plain = full_levels(tmp_path, Bicubic(), "none", 16)
    source = anchored[0]
    # The cast compounds over the levels without it; anchored, each level averages back to the input.
    assert (pooled(drifting[2], 16) - source).mean((1, 2)).abs().max() > 0.1
    for index in (1, 2):
        assert (pooled(anchored[index], 4**index) - source).mean((1, 2)).abs().max() < 0.01
    # The correction is one smooth field over the level, not a constant per tile: the anchored
    # level is the cast-free one everywhere, at tile edges too (within what box means of 2 input
    # px tell apart from bicubic interpolation).
    difference = (anchored[2] - plain[2]).abs()
    assert difference.mean() < 1 / 255 and difference.max() < 5 / 255
    assert [level.get("anchor_window") for level in manifest["levels"]] == [None, 8, 2]
    assert manifest["consistency"] == {
        "method": "anchor",
        "reference": "the input image at the step's box, bicubic",
        "statistics": "per-channel mean",
        "applied": "per level, as a shift field",
        "window": "a tile-sized patch of the level, in input px (levels[].anchor_window)",
    }


def test_the_anchor_pass_is_the_same_in_small_blocks_as_in_one(tmp_path: Path, monkeypatch) -> None:
    """Block by block, the shift field is resampled continuously: no block edge shows."""
    from chainzoom.runs import full
    from chainzoom.runs.pyramid import RawLevel

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 12, 20, generator=generator)
    pixels = (torch.rand(48, 80, 3, generator=generator) * 255).to(torch.uint8).numpy()
    results = []
    for block in (4, 1024):  # one input px per block, or the whole level at once
        monkeypatch.setattr(full, "ANCHOR_BLOCK", block)
        level = RawLevel(tmp_path / f"level-{block}.tif", 80, 48)
        level.create()
        level.write(0, 0, pixels)
        full.anchor_level(level, image, 4, 5)
        results.append(level.read(0, 0, 80, 48).astype(int))
    assert np.abs(results[0] - results[1]).max() == 0
    assert np.abs(results[1] - pixels.astype(int)).max() > 10


def test_full_image_mode_refuses_adain(tmp_path: Path, capsys) -> None:
    from chainzoom.cli import main

    image_path = tmp_path / "in.png"
    Image.fromarray(to_samples(sample(64, 48).rgb)).save(image_path)
    out = tmp_path / "never"
    assert (
        main(["zoom", str(image_path), "--full", "--backbone", "bicubic", "--consistency", "adain", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--consistency: adain: adain matches a state's colour spread" in err and "\n" not in err
    assert not out.exists()
