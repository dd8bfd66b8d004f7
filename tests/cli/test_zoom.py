"""The command line as a user meets it: real runs, resume, and every input error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from chainzoom.cli import main

from ..conftest import ROOT, SAMPLE, kill_after_states


def run_cli(*args: str) -> int:
    return main(["zoom", *args, "--quiet"])


@pytest.mark.slow
def test_real_x256_zoom_of_the_bundled_photo(tmp_path):
    out = tmp_path / "cat"
    assert run_cli(str(SAMPLE), "--scale", "256", "--center", "0.45,0.42", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["backbone"]["id"] == "realesrgan" and len(manifest["backbone"]["weights_sha256"]) == 64
    assert manifest["request"]["scale"] == 256 and manifest["request"]["mode"] == "chain"
    assert [s["magnification"] for s in manifest["states"]] == [1, 4, 16, 64, 256]
    for i in range(5):
        assert Image.open(out / f"step_{i:02d}.png").size == (448, 300)
    strip = Image.open(out / "strip.png")
    assert strip.width > 5 * 448 and strip.height >= 300
    assert Image.open(out / "zoom.webp").n_frames > 5
    # The final box is 1/256 of the view in input pixels and holds the zoom point.
    x0, y0, x1, y1 = manifest["states"][-1]["box"]
    assert x1 - x0 == 448 / 256
    assert x0 <= 0.45 * 451 <= x1 and y0 <= 0.42 * 300 <= y1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "bicubic", "nearest"])
def test_baseline_modes_share_the_chains_boxes(tmp_path, mode):
    args = [str(SAMPLE), "--scale", "16", "--view", "64", "--no-animation"]
    assert run_cli(*args, "--out", str(tmp_path / "chain")) == 0
    assert run_cli(*args, "--mode", mode, "--out", str(tmp_path / mode)) == 0
    chain = json.loads((tmp_path / "chain" / "manifest.json").read_text())
    other = json.loads((tmp_path / mode / "manifest.json").read_text())
    assert [s["box"] for s in other["states"]] == [s["box"] for s in chain["states"]]
    assert other["request"]["mode"] == mode
    assert (other["backbone"] is None) == (mode != "direct")


@pytest.mark.slow
def test_scale_that_is_not_a_power_of_four(tmp_path):
    out = tmp_path / "r"
    assert run_cli(str(SAMPLE), "--scale", "100", "--view", "64", "--no-animation", "--out", str(out)) == 0
    states = json.loads((out / "manifest.json").read_text())["states"]
    assert len(states) == 5
    assert states[-1]["magnification"] == pytest.approx(100, rel=0.02)
    assert Image.open(out / "step_04.png").size == (64, 40)  # 64 x 300/451, down to a multiple of 4


@pytest.mark.slow
def test_batch_of_a_folder_writes_one_folder_per_image(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.open(SAMPLE).resize((64, 48)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert run_cli(str(folder), "--scale", "4", "--no-animation", "--out", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "a" / "step_01.png").exists()
    assert (tmp_path / "out" / "b" / "step_01.png").exists()


@pytest.mark.slow
def test_different_arguments_on_an_existing_run_stop_unless_overwrite(tmp_path, capsys):
    out = str(tmp_path / "r")
    base = [str(SAMPLE), "--view", "64", "--no-animation", "--out", out]
    assert run_cli(*base, "--scale", "4") == 0
    assert run_cli(*base, "--scale", "16") == 2
    assert "different arguments (scale)" in capsys.readouterr().err
    assert run_cli(*base, "--scale", "16", "--overwrite") == 0
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["request"]["scale"] == 16


def _zoom_process(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chainzoom.cli",
            "zoom",
            str(SAMPLE),
            "--scale",
            "1024",
            "--view",
            "96",
            "--center",
            "0.3,0.6",
            "--no-animation",
            "--quiet",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert _zoom_process(reference).wait(timeout=300) == 0

    manifest = resumed / "manifest.json"
    finished = kill_after_states(_zoom_process(resumed), manifest, 3)
    assert 3 <= finished < 6, "the kill must land between steps"

    assert _zoom_process(resumed).wait(timeout=300) == 0
    assert not list(resumed.glob(".*.tmp*")), "a killed write's temp file must not survive the rerun"
    for i in range(6):
        name = f"step_{i:02d}.png"
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads(manifest.read_text())["complete"] is True


# --- errors: one clear line, exit code 2, no partial output -------------------------------


def _assert_clean_failure(capsys, out: Path, *args: str, match: str) -> None:
    assert run_cli(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chainzoom: error:") and len(err.splitlines()) == 1
    assert match in err
    assert not out.exists()


def test_truncated_file(tmp_path, capsys):
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(SAMPLE.read_bytes()[:2000])
    _assert_clean_failure(capsys, tmp_path / "o", str(bad), match="cut.jpg")


def test_not_an_image(tmp_path, capsys):
    bad = tmp_path / "text.png"
    bad.write_text("hello")
    _assert_clean_failure(capsys, tmp_path / "o", str(bad), match="text.png")


def test_zero_byte_file(tmp_path, capsys):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    _assert_clean_failure(capsys, tmp_path / "o", str(bad), match="empty.png")


def test_missing_file(tmp_path, capsys):
    _assert_clean_failure(capsys, tmp_path / "o", str(tmp_path / "nope.png"), match="nope.png")


@pytest.mark.parametrize("scale", ["1", "0.5", "-3"])
def test_scale_not_above_one(tmp_path, capsys, scale):
    _assert_clean_failure(capsys, tmp_path / "o", str(SAMPLE), "--scale", scale, match="--scale")


@pytest.mark.parametrize("center", ["1.2,0.5", "px:9999,10", "middle"])
def test_center_outside_the_image(tmp_path, capsys, center):
    _assert_clean_failure(capsys, tmp_path / "o", str(SAMPLE), "--center", center, match="--center")


def test_unknown_backbone(tmp_path, capsys):
    _assert_clean_failure(capsys, tmp_path / "o", str(SAMPLE), "--backbone", "nope", match="unknown backbone")


def test_image_over_the_pixel_limit(tmp_path, capsys):
    _assert_clean_failure(capsys, tmp_path / "o", str(SAMPLE), "--max-pixels", "1000", match="--max-pixels")


@pytest.mark.slow
def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(str(SAMPLE), "--scale", "4", "--out", str(blocker / "sub")) == 2
    err = capsys.readouterr().err
    assert err.startswith("chainzoom: error:") and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "x"


def test_models_lists_backbones_and_prompters(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("realesrgan", "realsr", "bicubic", "null", "fixed"):
        assert name in out


def test_options_at_the_value_that_changes_nothing_are_accepted_everywhere(tmp_path: Path, capsys) -> None:
    """Issue 22 item 7: a script may pass one set of flags to every mode (the official script passes
    ``--prompt_type`` to every ``rec_type``). A neutral value is the same run as no value; a value
    that would change something and cannot is still refused."""
    photo = tmp_path / "photo.png"
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 64, 48)).save(photo)
    out = tmp_path / "run"
    base = ["zoom", str(photo), "--scale", "16", "--out", str(out), "-q", "--device", "cpu"]
    assert main([*base, "--mode", "nearest"]) == 0
    before = json.loads((out / "manifest.json").read_text())
    neutral = ["--prompter", "null", "--numerics", "chainzoom", "--backbone", "realesrgan"]
    assert main([*base, "--mode", "nearest", *neutral]) == 0  # the same run: finished, not "different"
    after = json.loads((out / "manifest.json").read_text())
    assert after["request"] == before["request"] and after["states"] == before["states"]
    assert main([*base, "--mode", "nearest", "--prompter", "fixed:a cat"]) == 2
    assert "--prompter: does not apply: mode nearest uses no model" in capsys.readouterr().err
    chain = ["zoom", str(photo), "--scale", "16", "--out", str(tmp_path / "chain"), "-q", "--device", "cpu"]
    assert main([*chain, "--backbone", "bicubic", "--numerics", "chainzoom"]) == 0  # bicubic has no numerics
    assert json.loads((tmp_path / "chain" / "manifest.json").read_text())["request"]["numerics"] is None
