"""Run folders: one process at a time, states checked by hash on resume, manifests checked on read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import chainzoom
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.cli import main
from chainzoom.core.resample import resize
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.runs.lock import LOCK_FILE, RunLock
from chainzoom.runtime import Runtime

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


# --- what a run leaves: its results, never its lock; nothing where it made nothing ----------


def every_file(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones and the lock included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FailsAt(Backbone):
    """Bicubic 4x until call ``fail_at`` (1 = the first), which raises."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.calls = fail_at, 0

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("backbone failed")
        return resize(image, (image.shape[-1] * 4, image.shape[-2] * 4), "bicubic")

    def card(self) -> ModelCard:
        return ModelCard("fails-at", "bicubic 4x, then fails", "bicubic", 4, parameters=0)


class SilentEndpoint(Prompter):
    """A prompter whose endpoint never answers: every request times out."""

    id = "silent"

    def describe(self, context: PromptContext) -> str:
        raise TimeoutError("the endpoint did not answer")


def api_zoom(backbone: Backbone, out: Path, prompter: Prompter | None = None) -> None:
    chainzoom.ChainZoom(backbone, prompter, runtime=Runtime(device="cpu"))(
        torch.rand(3, 48, 48), scale=16, view=48, out=out
    )


def test_a_finished_run_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    assert zoom(out) == 0
    assert LOCK_FILE not in [p.name for p in out.iterdir()]
    assert zoom(out) == 0  # and a rerun (reading it back) leaves none either
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "step_00.png",
        "step_01.png",
        "step_02.png",
        "step_03.png",
        "strip.png",
        "zoom.webp",
    ]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b'{"tool": "not chainzoom"}', "is not a chainzoom manifest"),
        (b"[]", "is not a chainzoom manifest"),
        (b"{broken", "is unreadable"),
        (None, "holds a run with different arguments (center)"),
    ],
    ids=["foreign", "list", "unreadable", "different-arguments"],
)
def test_a_refused_run_leaves_the_folder_as_it_found_it(tmp_path, capsys, manifest, message):
    out = tmp_path / "run"
    if manifest is None:
        assert zoom(out) == 0
    else:
        out.mkdir()
        (out / "manifest.json").write_bytes(manifest)
        (out / "notes.txt").write_text("someone else's")
    before = every_file(out)
    capsys.readouterr()
    assert zoom(out, "--center", "0.2,0.2") == 2
    assert message in capsys.readouterr().err
    assert every_file(out) == before


def test_an_output_that_is_a_file_is_refused_and_nothing_is_made_beside_it(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("a file")
    assert zoom(out) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert every_file(tmp_path) == {"run": b"a file"}


def test_overwrite_replaces_a_manifest_that_is_not_chainzoom(tmp_path):
    """The refusal says "rerun with --overwrite": that works, and keeps what is not a run file."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text("[]")
    (out / "notes.txt").write_text("someone else's")
    assert zoom(out, "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert (out / "notes.txt").read_text() == "someone else's"


@pytest.mark.parametrize(
    ("backbone", "prompter"),
    [(FailsAt(1), None), (FailsAt(99), SilentEndpoint())],
    ids=["backbone", "prompter"],
)
def test_a_run_that_fails_before_any_step_leaves_no_folder(tmp_path, backbone, prompter):
    out = tmp_path / "new" / "run"  # neither folder exists: the run makes both
    with pytest.raises((RuntimeError, TimeoutError)):
        api_zoom(backbone, out, prompter)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_keeps_a_folder_that_was_there(tmp_path):
    out = tmp_path / "run"
    out.mkdir()  # made by the user: not the run's to remove
    with pytest.raises(RuntimeError):
        api_zoom(FailsAt(1), out)
    assert out.is_dir() and LOCK_FILE not in [p.name for p in out.iterdir()]


def test_a_parent_that_holds_something_else_is_kept(tmp_path):
    parent = tmp_path / "new"
    out = parent / "run"
    with pytest.raises(RuntimeError):
        # the backbone's failure comes after another process put a file beside the run folder
        class Neighbour(FailsAt):
            def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
                (parent / "other.txt").write_text("not the run's")
                return super().upscale(image, prompt)

        api_zoom(Neighbour(1), out)
    assert every_file(tmp_path) == {"new/other.txt": b"not the run's"}


def test_a_run_that_fails_after_a_step_keeps_its_results_but_not_its_lock(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        api_zoom(FailsAt(2), out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "step_00.png", "step_01.png"]
    api_zoom(FailsAt(99), out)  # and it resumes from them
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert LOCK_FILE not in [p.name for p in out.iterdir()]
