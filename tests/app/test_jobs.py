"""The app's work without a browser: uploads refused before anything is written, run folders, the model cache."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chainzoom.app import choices as app_choices
from chainzoom.app.jobs import AppFolder, Job, ModelCache, before_after, run_job, states_of
from chainzoom.backbones import BACKBONES
from chainzoom.cli import main
from chainzoom.errors import InputError
from chainzoom.prompts import PROMPTERS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` in a few bytes: what a decompression bomb looks like to a header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small photo.png"
    with Image.open(SAMPLE) as image:
        image.convert("RGB").crop((150, 80, 310, 200)).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "notes.png: not an image file"),
        (lambda d: (d / "empty.jpg").write_bytes(b"") or d / "empty.jpg", "empty.jpg: file is empty"),
        (lambda d: png_header_only(d / "bomb.png", 60000, 60000), "above the limit of 40,000,000 pixels"),
    ],
)
def test_a_bad_upload_is_one_line_and_writes_nothing(tmp_path: Path, make, problem: str) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    folder = AppFolder(tmp_path / "app")
    with pytest.raises(InputError, match=problem):
        folder.accept(make(uploads))
    assert not (tmp_path / "app").exists()


def test_an_upload_above_the_app_limit_is_refused(tmp_path: Path, small: Path) -> None:
    with pytest.raises(InputError, match=r"image is 160x120 \(19,200 pixels\), above the limit of 10,000 pixels"):
        AppFolder(tmp_path / "app", max_pixels=10_000).accept(small, name="mine.png")
    assert not (tmp_path / "app").exists()


def test_an_accepted_upload_is_kept_once_under_its_name(tmp_path: Path, small: Path) -> None:
    folder = AppFolder(tmp_path / "app")
    upload = folder.accept(small)
    assert upload.size == (160, 120) and upload.path.name == "small-photo.png"
    assert upload.path.read_bytes() == small.read_bytes()
    assert folder.accept(small).path == upload.path and len(list(folder.inputs.rglob("*.png"))) == 1
    other = tmp_path / "elsewhere" / "small photo.png"  # another picture under the same name
    other.parent.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(other)
    second = folder.accept(other)
    assert second.path != upload.path and second.path.name == upload.path.name
    jobs = [Job(u.path, 16.0, (0.5, 0.5), "chain", "bicubic", "null") for u in (upload, second)]
    assert folder.run_folder(jobs[0]) != folder.run_folder(jobs[1])
    assert folder.run_folder(jobs[0]).name.startswith("small-photo-x16-chain-")


def test_a_missing_extra_is_unavailable_with_its_install_hint(monkeypatch) -> None:
    monkeypatch.setattr(app_choices, "_extra_packages", lambda: {"labels": ("no-such-package-xyz",)})
    labels = next(c for c in app_choices.choices(PROMPTERS) if c.name == "labels")
    assert labels.problem == "needs no-such-package-xyz: pip install 'chainzoom[labels]'"
    assert "unavailable" in labels.label
    assert app_choices.check_choice(PROMPTERS, "labels") == f"prompter labels: {labels.problem}"
    assert app_choices.check_choice(PROMPTERS, "null") is None
    assert app_choices.check_choice(BACKBONES, "spandrel") == "backbone: 'spandrel' needs an argument: spandrel:PATH"


def test_one_model_set_is_kept(monkeypatch) -> None:
    cache = ModelCache(device="cpu")
    first = cache.get("bicubic", "null")
    assert cache.get("bicubic", "null") is first
    second = cache.get("nearest", "null")
    assert second is not first and cache.loaded == ("nearest", "null")


def test_a_cancelled_run_is_listed_unfinished_and_resumes(tmp_path: Path, small: Path) -> None:
    folder, cache = AppFolder(tmp_path / "app"), ModelCache(device="cpu")
    job = Job(folder.accept(small).path, 16.0, (0.3, 0.6), "chain", "bicubic", "null")
    run, total, states = run_job(folder, cache, job)
    assert total == 3
    assert next(states).index == 0 and next(states).index == 1
    states.close()  # what a cancelled Gradio job does to its generator
    assert [r["states"] for r in folder.previous_runs()] == ["2 of 3"] and not folder.previous_runs()[0]["complete"]
    assert folder.job_of(run.name) == job
    rerun, _, again = run_job(folder, cache, folder.job_of(run.name))
    assert rerun == run and [s.index for s in again] == [0, 1, 2]
    assert folder.previous_runs()[0]["complete"] and (run / "strip.png").is_file() and (run / "zoom.webp").is_file()
    with zipfile.ZipFile(folder.zip_run(run)) as archive:
        names = sorted(archive.namelist())
    assert names == sorted(
        f"{run.name}/{n}"
        for n in ("manifest.json", "step_00.png", "step_01.png", "step_02.png", "strip.png", "zoom.webp")
    )
    with pytest.raises(Exception, match="no run"):
        folder.job_of("../../etc")


def test_the_chosen_consistency_runs_names_its_folder_and_resumes(tmp_path: Path, small: Path) -> None:
    folder, cache = AppFolder(tmp_path / "app"), ModelCache(device="cpu")
    path = folder.accept(small).path
    default = Job(path, 16.0, (0.5, 0.5), "chain", "bicubic", "null")
    chosen = Job(path, 16.0, (0.5, 0.5), "chain", "bicubic", "null", "backprojection")
    assert default.consistency == "anchor" and folder.run_folder(default) != folder.run_folder(chosen)
    run, _, states = run_job(folder, cache, chosen)
    assert [s.index for s in states] == [0, 1, 2]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["request"]["consistency"] == "backprojection" and manifest["consistency"]["iterations"] == 3
    assert folder.job_of(run.name) == chosen
    assert folder.previous_runs()[0]["consistency"] == "backprojection"


def test_before_after_shows_the_same_region(tmp_path: Path, small: Path) -> None:
    """With the bicubic backbone a step *is* a bicubic resize of its region: before and after agree."""
    folder = AppFolder(tmp_path / "app")
    run, _, states = run_job(
        folder, ModelCache(device="cpu"), Job(folder.accept(small).path, 16.0, (0.4, 0.5), "chain", "bicubic", "null")
    )
    list(states)
    assert before_after(run, 0) is None and before_after(run, 3) is None
    for step in (1, 2):
        before, after = before_after(run, step)
        assert before.size == after.size == Image.open(run / states_of(run)[step]["file"]).size
        difference = np.abs(np.asarray(before, dtype=np.int16) - np.asarray(after, dtype=np.int16))
        assert difference.mean() < 3, step


def test_the_app_command_refuses_a_bad_port_in_one_line(capsys) -> None:
    assert main(["app", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "chainzoom: error: --port: must be 1..65535, got 70000\n"


def test_the_app_without_gradio_says_what_to_install(monkeypatch, capsys, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # what a missing package looks like to import
    assert main(["app", "--port", "7999", "--folder", str(tmp_path / "app")]) == 2
    assert capsys.readouterr().err == "chainzoom: error: chainzoom app needs gradio: pip install 'chainzoom[app]'\n"
    assert not (tmp_path / "app").exists()


def test_a_refused_upload_is_deleted_from_gradios_cache(tmp_path: Path, small: Path) -> None:
    folder = AppFolder(tmp_path / "app")
    arrived = folder.cache / "0123abcd" / "holiday.png"  # where Gradio puts an upload: cache/HASH/NAME
    arrived.parent.mkdir(parents=True)
    arrived.write_text("not a picture\n")
    with pytest.raises(InputError, match="holiday.png: not an image file"):
        folder.accept(arrived)
    assert not arrived.exists() and not arrived.parent.exists() and folder.cache.is_dir()
    elsewhere = tmp_path / "notes.png"  # a file outside the cache (a bundled photo, say) is never deleted
    elsewhere.write_text("not a picture\n")
    with pytest.raises(InputError):
        folder.accept(elsewhere)
    assert elsewhere.exists()
    kept = folder.cache / "4567" / "small.png"
    kept.parent.mkdir()
    kept.write_bytes(small.read_bytes())
    assert folder.accept(kept).size == (160, 120) and kept.exists()


def test_allow_host_takes_names_and_refuses_anything_else_in_one_line(capsys) -> None:
    for bad in ("bad name", "evil.example/path", "name:99999", "http://x", ""):
        assert main(["app", "--allow-host", "zoom.lan", "--allow-host", bad]) == 2
        assert capsys.readouterr().err == (
            f"chainzoom: error: --allow-host: must be a host name or address with an optional :PORT, got {bad!r}\n"
        )
