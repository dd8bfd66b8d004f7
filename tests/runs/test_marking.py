"""Every image a run writes says what it is (docs/provenance.md): step PNGs, strip, animation, levels."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from chainzoom.backbones import BACKBONES
from chainzoom.cli import main
from chainzoom.io.digest import file_sha256
from chainzoom.io.images import save_image
from chainzoom.io.marking import ALGORITHMICALLY_ENHANCED, TRAINED_ALGORITHMIC_MEDIA, XMP_PNG_KEY
from chainzoom.runs import driver

from .. import fakes
from ..io.test_marking import fields

ARGS = ["--scale", "16", "--view", "32", "--device", "cpu", "--quiet"]


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in.png"
    torch.manual_seed(0)
    save_image(path, torch.rand(3, 40, 48))
    return path


@pytest.fixture(autouse=True)
def unsaid(monkeypatch):
    """Each test starts as a fresh process: ``--marking none`` not yet said."""
    monkeypatch.setattr(driver, "_unmarked_said", False)


def zoom(photo: Path, out: Path, *extra: str) -> int:
    return main(["zoom", str(photo), *ARGS, *extra, "--out", str(out)])


def png_xmp(path: Path) -> dict[str, str | None] | None:
    with Image.open(path) as image:
        text = image.info.get(XMP_PNG_KEY)
    return fields(text) if text is not None else None


def test_an_interpolation_run_is_marked_algorithmically_enhanced(tmp_path, photo):
    out = tmp_path / "run"
    assert zoom(photo, out, "--backbone", "bicubic") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["marking"] == "xmp"
    assert "marking" not in manifest["request"]
    state0 = png_xmp(out / "step_00.png")
    assert state0 is not None and state0["type"] is None  # the input's own pixels: not marked generated
    for name in ("step_01.png", "step_02.png", "strip.png"):
        got = png_xmp(out / name)
        assert got is not None and got["type"] == ALGORITHMICALLY_ENHANCED, name
    description = png_xmp(out / "step_02.png")["description"]  # type: ignore[index]
    assert file_sha256(photo) in description and "x16" in description and "backbone bicubic" in description
    with Image.open(out / "zoom.webp") as animation:
        assert animation.n_frames > 1
        assert fields(animation.info["xmp"])["type"] == ALGORITHMICALLY_ENHANCED


def test_a_baseline_mode_is_marked_algorithmically_enhanced(tmp_path, photo):
    out = tmp_path / "run"
    assert zoom(photo, out, "--mode", "bicubic", "--no-animation") == 0
    got = png_xmp(out / "step_01.png")
    assert got is not None and got["type"] == ALGORITHMICALLY_ENHANCED
    assert "backbone bicubic" in (got["description"] or "")


def test_a_learned_backbone_is_marked_trained_algorithmic_media(tmp_path, photo, monkeypatch):
    monkeypatch.setitem(BACKBONES._builtin, "counting", fakes.COUNTING)
    out = tmp_path / "run"
    assert zoom(photo, out, "--backbone", "counting", "--prompter", "fixed:a red fox", "--no-animation") == 0
    assert png_xmp(out / "step_00.png")["type"] is None  # type: ignore[index]
    got = png_xmp(out / "step_02.png")
    assert got is not None and got["type"] == TRAINED_ALGORITHMIC_MEDIA
    assert "backbone counting" in (got["description"] or "") and "a red fox" in (got["description"] or "")
    assert png_xmp(out / "strip.png")["type"] == TRAINED_ALGORITHMIC_MEDIA  # type: ignore[index]


def test_marking_none_leaves_no_xmp_is_said_once_and_recorded(tmp_path, photo, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(photo, folder / name)
    out = tmp_path / "runs"
    assert main(["zoom", str(folder), *ARGS, "--backbone", "bicubic", "--marking", "none", "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("outputs are not marked as generated") == 1
    for run in ("a", "b"):
        assert json.loads((out / run / "manifest.json").read_text())["marking"] == "none"
        for png in (out / run).glob("*.png"):
            assert png_xmp(png) is None, png
        with Image.open(out / run / "zoom.webp") as animation:
            assert "xmp" not in animation.info


def test_marking_is_not_identity_but_a_run_is_finished_under_its_own(tmp_path, photo, capsys):
    marked, plain = tmp_path / "marked", tmp_path / "plain"
    assert zoom(photo, marked, "--backbone", "bicubic", "--no-animation") == 0
    assert zoom(photo, plain, "--backbone", "bicubic", "--no-animation", "--marking", "none") == 0
    requests = [json.loads((f / "manifest.json").read_text())["request"] for f in (marked, plain)]
    assert requests[0] == requests[1]
    with Image.open(marked / "step_02.png") as a, Image.open(plain / "step_02.png") as b:
        assert a.tobytes() == b.tobytes()  # the same pixels, marked or not
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest["complete"] = False
    manifest["states"] = manifest["states"][:2]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert zoom(photo, plain, "--backbone", "bicubic", "--no-animation") == 2
    assert "--marking none" in capsys.readouterr().err


def test_a_resumed_run_writes_the_same_marked_bytes(tmp_path, photo):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert zoom(photo, whole, "--backbone", "bicubic") == 0
    assert zoom(photo, resumed, "--backbone", "bicubic") == 0
    manifest = json.loads((resumed / "manifest.json").read_text())
    manifest["complete"] = False
    manifest["states"] = manifest["states"][:2]
    (resumed / "manifest.json").write_text(json.dumps(manifest))
    for name in ("step_02.png", "strip.png", "zoom.webp"):
        (resumed / name).unlink()
    assert zoom(photo, resumed, "--backbone", "bicubic") == 0
    for name in ("step_00.png", "step_01.png", "step_02.png", "strip.png", "zoom.webp"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_full_image_levels_are_marked(tmp_path, photo, fmt):
    pytest.importorskip("pyvips", reason="full-image mode needs the [tiles] extra (pyvips)")
    out = tmp_path / "full"
    args = ["zoom", str(photo), "--full", "--scale", "16", "--backbone", "bicubic", "--device", "cpu"]
    assert main([*args, "--format", fmt, "--quiet", "--out", str(out)]) == 0
    suffix = {"png": ".png", "tiff": ".tif"}[fmt]
    types = []
    for index in range(3):
        with Image.open(out / f"level_{index:02d}{suffix}") as level:
            xmp = level.info.get(XMP_PNG_KEY) or level.info.get("xmp") or level.tag_v2.get(700)  # type: ignore[attr-defined]
            types.append(fields(xmp)["type"])
    assert types == [None, ALGORITHMICALLY_ENHANCED, ALGORITHMICALLY_ENHANCED]
    assert json.loads((out / "manifest.json").read_text())["marking"] == "xmp"


def test_deep_zoom_tiles_are_marked(tmp_path, photo):
    pyvips = pytest.importorskip("pyvips", reason="full-image mode needs the [tiles] extra (pyvips)")
    if not pyvips.at_least_libvips(8, 15):
        pytest.skip("libvips before 8.15 cannot keep XMP in dzsave's tiles")
    out = tmp_path / "full"
    args = ["zoom", str(photo), "--full", "--scale", "4", "--backbone", "bicubic", "--device", "cpu"]
    assert main([*args, "--format", "dzi", "--quiet", "--out", str(out)]) == 0
    for index, expected in ((0, None), (1, ALGORITHMICALLY_ENHANCED)):
        tiles = sorted((out / f"level_{index:02d}_files").glob("*/*.jpg"))
        assert tiles
        for tile in tiles:
            with Image.open(tile) as image:
                assert fields(image.info["xmp"])["type"] == expected, tile


def test_exiftool_reads_a_step_png(tmp_path, photo):
    tool = shutil.which("exiftool")
    if tool is None:
        pytest.skip("exiftool is not installed (Debian: apt-get install libimage-exiftool-perl; make test does)")
    out = tmp_path / "run"
    assert zoom(photo, out, "--backbone", "bicubic", "--no-animation") == 0
    report = subprocess.run(
        [tool, "-j", "-XMP:all", str(out / "step_01.png"), str(out / "step_00.png")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    step1, step0 = json.loads(report)
    assert step1["DigitalSourceType"] == ALGORITHMICALLY_ENHANCED
    assert "DigitalSourceType" not in step0
    assert step1["CreatorTool"].startswith("chainzoom ")
