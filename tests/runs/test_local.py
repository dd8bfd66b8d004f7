"""Run folders: one process at a time, states checked by hash on resume, manifests checked on read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from chainzoom.cli import main
from chainzoom.runs.lock import RunLock

from ..conftest import SAMPLE

ARGS = ["--scale", "64", "--view", "64", "--backbone", "bicubic", "--device", "cpu", "--quiet"]


def zoom(out: Path, *extra: str) -> int:
    return main(["zoom", str(SAMPLE), *ARGS, *extra, "--out", str(out)])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".chainzoom.lock"}


def test_a_second_process_on_the_same_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert zoom(out) == 0
    before = snapshot(out)
    with RunLock(out):  # as a live run holds it
        assert zoom(out, "--center", "0.2,0.2", "--overwrite") == 2
    err = capsys.readouterr().err
    assert err == (
        f"chainzoom: error: {out} is in use by another chainzoom process (pid {os.getpid()}); "
        "wait for it to finish or use another --out\n"
    )
    assert snapshot(out) == before
    assert zoom(out, "--center", "0.2,0.2", "--overwrite") == 0  # once released, the folder is free


def test_a_replaced_state_is_made_again_on_resume(tmp_path):
    out = tmp_path / "run"
    assert zoom(out) == 0
    original = (out / "step_02.png").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(s["sha256"]) == 64 for s in manifest["states"])
    Image.new("RGB", (64, 42), "red").save(out / "step_02.png")  # a valid image, but not the run's
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert zoom(out) == 0
    assert (out / "step_02.png").read_bytes() == original
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([], "a JSON list, not an object"),
        ({"states": []}, "no request"),
        (
            {"request": {}, "states": [{"index": 0, "box": [0, 0, 1, 1], "magnification": 1}]},
            "state 0 has no valid file",
        ),
        (
            {"request": {}, "states": [{"index": 0, "file": "step_00.png", "magnification": 1}]},
            "state 0 has no valid box",
        ),
        ({"request": {}, "states": {}}, "states is not a list"),
    ],
)
def test_a_broken_manifest_is_one_line(tmp_path, capsys, content, problem):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(content))
    assert zoom(out) == 2
    err = capsys.readouterr().err
    assert err == (
        f"chainzoom: error: {out / 'manifest.json'} is not a chainzoom manifest ({problem}); rerun with --overwrite\n"
    )


@pytest.mark.parametrize("name", ["strip.png", "zoom.webp", "manifest.json"])
def test_a_full_disk_while_rendering_is_one_line(tmp_path, capsys, monkeypatch, name):
    """A full disk on the strip, the animation or the manifest: one line, exit 2, no temp file."""
    import errno

    from chainzoom.io import atomic

    real = atomic.os.replace

    def full_disk(src, dst):
        hit = Path(dst).name == name
        if hit and (name != "manifest.json" or '"complete": true' in Path(src).read_text()):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    out = tmp_path / "run"
    assert zoom(out) == 2
    assert capsys.readouterr().err == f"chainzoom: error: cannot write {out / name}: No space left on device\n"
    assert not list(out.glob(".*.tmp.*"))
