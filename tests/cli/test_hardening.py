"""Small input cases of issue 18: each one line and exit 2, or simply working, from the command line."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from chainzoom.cli import main

from ..conftest import SAMPLE

FAST = ["--backbone", "bicubic", "--device", "cpu", "--quiet"]


def test_a_fifo_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert main(["zoom", str(fifo), *FAST, "--out", str(tmp_path / "o")]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main(["zoom", "/dev/urandom", *FAST, "--out", str(tmp_path / "o")]) == 2
    assert "/dev/urandom: not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_folder_scan_takes_gif_files(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(SAMPLE).convert("P").save(photos / "cat.gif")
    Image.open(SAMPLE).save(photos / "cat2.png")
    assert main(["zoom", str(photos), "--scale", "4", *FAST, "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "cat" / "step_01.png").is_file() and (tmp_path / "o" / "cat2" / "step_01.png").is_file()


@pytest.mark.parametrize("full", [[], ["--full"]])
def test_a_small_tile_alone_gets_a_fitting_overlap(tmp_path, full):
    """``--tile 64`` alone used to fail after the first files were written (overlap 160 >= tile)."""
    out = tmp_path / "o"
    assert main(["zoom", str(SAMPLE), "--scale", "4", "--tile", "64", *full, *FAST, "--out", str(out)]) == 0
    assert out.joinpath("manifest.json").is_file()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--scale", "1e17"], "--scale: must be a number greater than 1 and at most 4**20 (~1.1e12), got 1e+17"),
        (["--scale", "1e300"], "--scale: must be a number greater than 1 and at most 4**20 (~1.1e12), got 1e+300"),
        (["--full", "--tile", "0"], "--tile: must be at least 32, got 0"),
        (["--tile", "0"], "--tile: must be at least 32, got 0"),
        (["--max-pixels", "-1"], "--max-pixels: must be at least 1, got -1"),
        (
            ["--prompter", "openai:http://127.0.0.1:9/v1,model=m", "--prompter-timeout", "inf"],
            "--prompter-timeout: must be a positive number of seconds, got inf",
        ),
    ],
)
def test_bad_numbers_are_one_line_before_anything_is_written(tmp_path, capsys, args, line):
    out = tmp_path / "o"
    assert main(["zoom", str(SAMPLE), *args, *FAST, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"chainzoom: error: {line}\n"
    assert not out.exists()


def test_an_option_that_changes_no_pixel_keeps_the_run(tmp_path):
    """Options that change no pixel are not part of a run's identity."""
    out = tmp_path / "o"
    base = ["zoom", str(SAMPLE), "--scale", "4", *FAST, "--out", str(out)]
    assert main([*base, "--prompter", "fixed:a cat"]) == 0
    assert main([*base, "--prompter", "fixed:a cat", "--no-animation"]) == 0
    assert main([*base, "--prompter", "fixed:a dog"]) == 2  # this one changes the pixels' prompt
