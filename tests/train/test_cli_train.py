"""``chainzoom train-backbone`` on the command line: bad options in one line, and --preview."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

from chainzoom.cli import main

from .helpers import write_photos


def test_bad_options_exit_2_in_one_line_and_write_nothing(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", 2, 96)
    out = tmp_path / "run"
    cases = [
        ["--images", str(photos), "--out", str(out)],  # no --base
        ["--base", str(tmp_path), "--images", str(photos), "--out", str(out), "--loss", "mse=1,lpips=2"],
        ["--base", str(tmp_path), "--images", str(photos), "--out", str(out), "--loss", "mse=x", "--vgg", "v"],
        ["--base", str(tmp_path), "--images", str(photos), "--out", str(out), "--degradation", "jpeg"],
        ["--base", str(tmp_path), "--images", str(photos), "--out", str(out), "--loss", "mse=1", "--lr", "0"],
    ]
    for argv in cases:
        assert main(["train-backbone", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("chainzoom: error: --") and "\n" not in err
    assert not out.exists()


def test_base_must_be_an_sd3_folder(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", 1, 96)
    argv = ["train-backbone", "--base", str(tmp_path), "--images", str(photos), "--loss", "mse=1", "--crop", "96"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "not a diffusers model folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_preview_writes_pairs_and_what_was_drawn(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", 3, 96)
    out = tmp_path / "run"
    argv = ["train-backbone", "--images", str(photos), "--out", str(out), "--crop", "80", "--preview", "4"]
    assert main([*argv, "--device", "cpu"]) == 0
    records = json.loads((out / "preview" / "pairs.json").read_text())
    assert len(records) == 4 and all(r["degradation"] == "realesrgan" for r in records)
    for record in records:
        with Image.open(out / "preview" / f"{record['pair']}_hr.png") as hr:
            assert hr.size == (80, 80)
        with Image.open(out / "preview" / f"{record['pair']}_lr.png") as lr:
            assert lr.size == (20, 20)
        assert 30 <= record["first"]["jpeg"] <= 95
    first = (out / "preview" / "pair_001_lr.png").read_bytes()
    assert main([*argv, "--device", "cpu"]) == 0  # seeded: the same pairs again
    assert (out / "preview" / "pair_001_lr.png").read_bytes() == first
    assert not (out / "train.json").exists()


def test_the_command_line_still_starts_without_torch():
    """train-backbone's config is importable without torch, so ``chainzoom --help`` stays fast."""
    code = "import sys, chainzoom.cli; chainzoom.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_images_may_be_repeated_and_add_up():
    from chainzoom.cli import build_parser
    from chainzoom.cli.parsing import config_from
    from chainzoom.train.config import TrainBackboneConfig

    argv = ["train-backbone", "--base", "B", "--images", "lsdir", "--images", "ffhq", "x", "--loss", "mse=1"]
    args = build_parser().parse_args(argv)
    assert config_from(args, TrainBackboneConfig).images == ("lsdir", "ffhq", "x")
