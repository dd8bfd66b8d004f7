"""An option a command or a backbone cannot use: the same one line and exit 2 in every command."""

from __future__ import annotations

import pytest

from chainzoom.cli import main

from ..conftest import SAMPLE

COMMANDS = {
    "zoom": ["zoom", str(SAMPLE)],
    "zoom --full": ["zoom", str(SAMPLE), "--full", "--scale", "4"],
    "prompts": ["prompts", str(SAMPLE)],
    "eval": ["eval", "--images", str(SAMPLE)],
    "align": ["align", "--images", str(SAMPLE)],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("options", "line"),
    [
        (
            ["--backbone", "bicubic", "--engine", "ncnn"],
            "--engine: ncnn does not apply to backbone 'bicubic' (engines: torch)",
        ),
        (
            ["--backbone", "bicubic", "--runtime", "ncnn"],
            "--engine: ncnn does not apply to backbone 'bicubic' (engines: torch)",
        ),
        (["--color-fix", "adain"], "--color-fix: does not apply to backbone 'realesrgan' (it takes none)"),
        (["--tile", "8"], "--tile: must be at least 32, got 8"),
        (["--tile", "64", "--tile-overlap", "64"], "--tile-overlap: (64) must be smaller than the tile (64)"),
        (
            ["--dtype", "float16", "--device", "cpu"],
            "--dtype: float16 is for GPUs; on the CPU use auto, float32 or bfloat16",
        ),
    ],
)
def test_the_same_refusal_everywhere(tmp_path, capsys, command, options, line):
    out = tmp_path / "out"
    where = [] if command == "prompts" else ["--out", str(out)]
    assert main([*COMMANDS[command], *options, *where]) == 2
    assert capsys.readouterr().err == f"chainzoom: error: {line}\n"
    assert not out.exists()


def test_the_reported_prompts_bug_is_refused_like_zoom(capsys):
    """``prompts`` used to ignore --runtime/--tile/--color-fix that zoom refuses."""
    args = ["--backbone", "bicubic", "--runtime", "ncnn", "--color-fix", "adain"]
    assert main(["prompts", str(SAMPLE), *args]) == 2
    prompts = capsys.readouterr().err
    assert main(["zoom", str(SAMPLE), *args]) == 2
    assert capsys.readouterr().err == prompts != ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["zoom", str(SAMPLE), "--full", "--view", "64"], "--view: does not apply to zoom --full"),
        (["zoom", str(SAMPLE), "--full", "--no-animation"], "--no-animation: does not apply to zoom --full"),
        (["zoom", str(SAMPLE), "--format", "dzi"], "--format: applies only to zoom --full"),
        (
            ["zoom", str(SAMPLE), "--mode", "bicubic", "--backbone", "realsr"],
            "--backbone: does not apply: mode bicubic uses no model",
        ),
        (
            ["zoom", str(SAMPLE), "--prompter-offload"],
            "--prompter-offload: does not apply to prompter 'null' (it takes none)",
        ),
        (["zoom", str(SAMPLE), "--out", ""], "--out: must name a folder, got an empty path"),
        (["zoom", str(SAMPLE), "--max-pixels", "0"], "--max-pixels: must be at least 1, got 0"),
        (["prompts", str(SAMPLE), "--critic", "x"], "--critic: applies only with score (--score)"),
    ],
)
def test_options_that_do_not_apply(tmp_path, capsys, args, line):
    assert main(args) == 2
    assert capsys.readouterr().err == f"chainzoom: error: {line}\n"


def test_a_flag_a_command_does_not_have_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["prompts", str(SAMPLE), "--mode", "direct"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --mode direct" in err
