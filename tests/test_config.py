"""Configs: TOML files and flags make the same run, --rerun repeats a run, bad keys are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainzoom.cli import main
from chainzoom.config import EvalConfig, FullConfig, ZoomConfig, from_mapping, to_dict
from chainzoom.errors import OptionError
from chainzoom.runtime import Runtime

from .conftest import SAMPLE

FLAGS = ["--scale", "64", "--center", "0.45,0.42", "--view", "96", "--backbone", "bicubic", "--tile", "64"]
TOML = """
scale = 64
center = [0.45, 0.42]
view = 96
backbone = "bicubic"

[runtime]
tile = 64
"""


def zoom(*args: str) -> int:
    return main(["zoom", *args, "--quiet", "--device", "cpu"])


def steps(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("step_*.png"))]


def test_a_config_file_makes_the_same_pixels_as_the_flags(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(TOML)
    assert zoom(str(SAMPLE), *FLAGS, "--out", str(tmp_path / "flags")) == 0
    assert zoom(str(SAMPLE), "--config", str(config), "--out", str(tmp_path / "file")) == 0
    assert len(steps(tmp_path / "file")) == 4 and steps(tmp_path / "file") == steps(tmp_path / "flags")
    # a flag overrides the file
    assert zoom(str(SAMPLE), "--config", str(config), "--scale", "16", "--out", str(tmp_path / "over")) == 0
    assert len(steps(tmp_path / "over")) == 3


def test_inputs_and_every_option_can_come_from_the_file(tmp_path):
    config = tmp_path / "all.toml"
    config.write_text(f'inputs = ["{SAMPLE}"]\nout = "{tmp_path / "o"}"\nanimation = false\n' + TOML)
    assert zoom("--config", str(config)) == 0
    assert len(steps(tmp_path / "o")) == 4 and not (tmp_path / "o" / "zoom.webp").exists()


def test_rerun_reproduces_a_finished_run_bit_for_bit(tmp_path):
    assert zoom(str(SAMPLE), *FLAGS, "--mode", "direct", "--out", str(tmp_path / "first")) == 0
    manifest = tmp_path / "first" / "manifest.json"
    assert zoom("--rerun", str(manifest), "--out", str(tmp_path / "again")) == 0
    assert steps(tmp_path / "again") == steps(tmp_path / "first") and len(steps(tmp_path / "first")) == 4
    first, again = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("first", "again"))
    assert first["request"] == again["request"] and again["request"]["mode"] == "direct"


def test_rerun_of_a_full_image_run(tmp_path):
    args = ["--full", "--scale", "4", "--backbone", "bicubic", "--tile", "256", "--tile-overlap", "16"]
    assert zoom(str(SAMPLE), *args, "--out", str(tmp_path / "full")) == 0
    assert zoom("--rerun", str(tmp_path / "full" / "manifest.json"), "--out", str(tmp_path / "again")) == 0
    names = ("level_00.tif", "level_01.tif")
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_rerun_refuses_a_changed_input(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    assert zoom(str(photo), "--scale", "4", "--backbone", "bicubic", "--out", str(tmp_path / "r")) == 0
    photo.write_bytes(SAMPLE.read_bytes() + b"\0")
    assert main(["zoom", "--rerun", str(tmp_path / "r" / "manifest.json"), "--out", str(tmp_path / "x")]) == 2
    assert "has changed since the run (its SHA-256 differs)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scale = 64\nzoom = 2\n", "unknown key 'zoom'"),
        ('scale = "big"\n', "scale must be a number, got 'big'"),
        ("animation = 1\n", "animation must be true or false, got 1"),
        ("[runtime]\ntiles = 64\n", r"\[runtime\]: unknown key 'tiles'"),
        ("runtime = 3\n", "runtime must be a table of runtime options"),
        ("scale = [", "not valid TOML"),
    ],
)
def test_a_bad_config_file_gets_one_line_naming_the_key(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["zoom", str(SAMPLE), "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(config) in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_a_missing_config_file(tmp_path, capsys):
    assert main(["zoom", str(SAMPLE), "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err


def test_configs_round_trip_through_plain_data():
    for config in (
        ZoomConfig(inputs=("a.png",), scale=100.0, center="px:3,4", view=(64, 48), runtime=Runtime(tile=64)),
        FullConfig(inputs=("a.png",), format="dzi", prompter="fixed:a cat"),
        EvalConfig(
            images=("a", "b"), scales=(4, 16), modes=("chain", "bicubic"), prompter="vlm", prompter_max_tokens=8
        ),
    ):
        data = json.loads(json.dumps(to_dict(config)))
        assert from_mapping(type(config), data, "test") == config


def test_options_are_checked_where_they_are_made():
    with pytest.raises(OptionError, match="^backbone: does not apply: mode nearest uses no model"):
        ZoomConfig(mode="nearest", backbone="realsr")
    with pytest.raises(OptionError, match="^prompter_max_tokens: does not apply to prompter 'fixed'"):
        ZoomConfig(prompter="fixed:x", prompter_max_tokens=3)
    with pytest.raises(OptionError, match="^tile_overlap: .* must be smaller than the tile"):
        Runtime(tile=64, tile_overlap=64)
    assert Runtime(tile=64).overlap == 32 and Runtime().overlap == 160
    with pytest.raises(OptionError, match="^prompter_timeout: must be a positive"):
        ZoomConfig(prompter="openai:http://x/v1,model=m", prompter_timeout=float("nan"))
    with pytest.raises(OptionError, match="^scale: must be a number greater than 1 and at most"):
        ZoomConfig(scale=1e17)


def test_the_largest_scale_still_has_exact_boxes(tmp_path):
    """At 4**20 every box still has a width (a 1e17 zoom once divided by zero in the planner)."""
    import chainzoom

    result = chainzoom.zoom(SAMPLE, scale=4.0**20, backbone="bicubic", view=16, runtime=Runtime(device="cpu"))
    last = result[-1].box
    assert len(result) == 21 and last.width == 16 / 4**20 and last.x0 < last.x1
    assert result[-1].magnification == 4**20


def test_what_changes_pixels_is_the_identity_and_nothing_else():
    from chainzoom.config import identity

    spec = "openai:http://127.0.0.1:9/v1,model=m"
    base = identity(ZoomConfig(prompter=spec, prompter_timeout=5.0))
    assert identity(ZoomConfig(prompter=spec, prompter_timeout=60.0)) == base  # no pixel changes
    assert identity(ZoomConfig(prompter=spec, out="elsewhere", quiet=True, animation=False)) == base
    assert identity(ZoomConfig(prompter=spec, runtime=Runtime(tile=256, tile_overlap=16))) != identity(
        ZoomConfig(prompter=spec, runtime=Runtime(tile=256, tile_overlap=32))
    )


def test_a_finished_tiled_run_with_another_overlap_is_another_run(tmp_path, capsys):
    args = [str(SAMPLE), "--scale", "4", "--backbone", "bicubic", "--tile", "64", "--out", str(tmp_path / "r")]
    assert zoom(*args, "--tile-overlap", "16") == 0
    assert zoom(*args, "--tile-overlap", "24") == 2
    assert "holds a run with different arguments (runtime)" in capsys.readouterr().err
