"""The equivalence matrix: the same options give the same run through every front-end.

Each option set (mode x policy x consistency x protocol, and ``--full``) runs through every
front-end that takes it: ``chainzoom zoom`` on a file and on a folder, ``ChainZoom.__call__``,
``iter_zoom`` and ``zoom_batch``, ``chainzoom eval``, the app's jobs, and ``zoom_full``. The
step files must be byte-identical and the manifests equal, times and host aside. The Ray
executor's leg of the matrix is in tests/runs/test_ray.py (it needs a cluster).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chainzoom.api import ChainZoom
from chainzoom.cli import main
from chainzoom.runtime import Runtime

from ..conftest import SAMPLE

SCALE = 16
#: Option sets of a local zoom, by name: the keywords of ``ChainZoom.__call__`` (backbone and
#: prompter aside), which the CLI takes as flags of the same names.
ZOOMS: dict[str, dict[str, Any]] = {
    "chain": {"backbone": "bicubic"},  # consistency auto: anchor
    "chain-none-lanczos": {"backbone": "lanczos", "consistency": "none"},
    "chain-wavelet": {"backbone": "bicubic", "consistency": "wavelet"},
    "direct": {"backbone": "bicubic", "mode": "direct"},
    "onestep": {"backbone": "lanczos", "mode": "onestep"},
    "nearest": {"mode": "nearest"},
    "adaptive": {
        "backbone": "bicubic",
        "policy": "adaptive",
        "backbones": ("bicubic", "lanczos"),
        "factors": (2.0, 4.0),
        "stop_below": None,
    },
    "official-chain": {"backbone": "bicubic", "protocol": "official", "process_size": 64},
    "official-onestep": {"backbone": "bicubic", "mode": "onestep", "protocol": "official", "process_size": 64},
    "official-bicubic": {"mode": "bicubic", "protocol": "official", "process_size": 64},
}
#: What changes from run to run whatever the options: when, how long, on which host, where.
VOLATILE = {"created", "seconds", "render_seconds", "worker", "executor"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small photos (192 px: the adaptive policy's NIQE needs that), in a folder."""
    folder = tmp_path_factory.mktemp("photos")
    with Image.open(SAMPLE) as sample:
        sample.convert("RGB").crop((120, 60, 312, 252)).save(folder / "cat.png")
        sample.convert("RGB").crop((0, 0, 200, 192)).save(folder / "corner.png")
    return folder


def flags(options: dict[str, Any]) -> list[str]:
    """The CLI flags of API keywords."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is False:
            args.append("--no-" + name.replace("_", "-"))
            continue
        if value is None:
            value = "none"
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        args += [flag, str(value)]
    return args


def cpu() -> Runtime:
    return Runtime(device="cpu")


def pipeline(options: dict[str, Any]) -> tuple[ChainZoom, dict[str, Any]]:
    """The pipeline of ``options``' backbone, and the options left for the call."""
    rest = dict(options)
    return ChainZoom(rest.pop("backbone", None), runtime=cpu()), rest


def by_cli_file(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    assert (
        main(["zoom", str(photo), "--scale", str(SCALE), "--out", str(out), "-q", "--device", "cpu", *flags(options)])
        == 0
    )
    return out


def by_cli_folder(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    args = ["zoom", str(photo.parent), "--scale", str(SCALE), "--out", str(out), "-q", "--device", "cpu"]
    assert main([*args, *flags(options)]) == 0
    return out / photo.stem


def by_call(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    cz, rest = pipeline(options)
    cz(photo, SCALE, out=out, **rest)
    return out


def by_iter(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    cz, rest = pipeline(options)
    assert len(list(cz.iter_zoom(photo, SCALE, out=out, **rest))) >= 2
    return out


def by_batch(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    cz, rest = pipeline(options)
    return cz.zoom_batch([photo.parent], out, SCALE, **rest)[
        [p.name for p in sorted(photo.parent.iterdir())].index(photo.name)
    ]


def by_a_used_pipeline(photo: Path, out: Path, options: dict[str, Any]) -> Path:
    """A pipeline that has run other zooms first (with other options) must not remember them."""
    cz, rest = pipeline(options)
    cz(photo, 4.0, mode="chain" if rest.get("mode", "chain") in ("chain", "direct", "onestep") else "bicubic")
    cz(photo, SCALE, mode="nearest")
    cz(photo, SCALE, out=out, **rest)
    return out


FRONT_ENDS: dict[str, Callable[[Path, Path, dict[str, Any]], Path]] = {
    "cli-file": by_cli_file,
    "cli-folder": by_cli_folder,
    "api-call": by_call,
    "api-iter": by_iter,
    "api-batch": by_batch,
    "api-used": by_a_used_pipeline,
}


def summary(folder: Path) -> dict[str, Any]:
    """What must be equal: every step file's bytes, and the manifest without what is volatile."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    steps = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("step_*.png"))}
    return {"steps": steps, "manifest": strip(manifest)}


def reference(photo: Path, root: Path, name: str) -> dict[str, Any]:
    out = root / "reference" / name
    if not out.exists():
        by_cli_file(photo, out, ZOOMS[name])
    return summary(out)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "adaptive" else n for n in ZOOMS])
def test_every_front_end_makes_the_same_run(name: str, photos: Path, tmp_path_factory) -> None:
    root = tmp_path_factory.getbasetemp() / "equivalence"
    photo = photos / "cat.png"
    expected = reference(photo, root, name)
    assert len(expected["steps"]) >= 3
    for front, make in FRONT_ENDS.items():
        out = root / front / name
        shutil.rmtree(out, ignore_errors=True)
        got = summary(make(photo, out, ZOOMS[name]))
        assert got == expected, f"{front} differs from chainzoom zoom for {name}"


#: The rows ``chainzoom eval`` makes, and the zoom options each row is.
EVAL_ROWS = {
    "chain": ["--modes", "chain"],
    "chain+anchor": ["--modes", "chain", "--consistency", "anchor"],
    "direct": ["--modes", "direct"],
    "nearest": ["--modes", "nearest"],
    "chain~adaptive": [
        "--modes",
        "chain",
        "--policy",
        "adaptive",
        "--backbones",
        "bicubic,lanczos",
        "--stop-below",
        "none",
    ],
}
EVAL_AS_ZOOM = {
    "chain": {"backbone": "bicubic", "consistency": "none"},
    "chain+anchor": {"backbone": "bicubic", "consistency": "anchor"},
    "direct": {"backbone": "bicubic", "mode": "direct"},
    "nearest": {"mode": "nearest"},
    "chain~adaptive": {"backbone": "bicubic", "consistency": "none", **ZOOMS["adaptive"]},
}


@pytest.mark.parametrize("row", list(EVAL_ROWS))
def test_an_eval_run_is_the_zoom_run_of_its_row(row: str, photos: Path, tmp_path: Path) -> None:
    """Each eval run folder is the ``chainzoom zoom`` run of the same options (so either reuses the other)."""
    out = tmp_path / "report"
    args = ["eval", "--images", str(photos / "cat.png"), "--scales", str(SCALE), "--backbone", "bicubic"]
    args += ["--metrics", "entropy", "--no-fidelity", "--no-drift", "--out", str(out), "-q", "--device", "cpu"]
    assert main([*args, *EVAL_ROWS[row]]) == 0
    zoom = by_cli_file(photos / "cat.png", tmp_path / "zoom", {**EVAL_AS_ZOOM[row], "animation": False})
    assert summary(out / "runs" / "cat" / row) == summary(zoom)


APP_JOBS = {"chain": {}, "chain-none-lanczos": {}, "direct": {}, "onestep": {}, "nearest": {}}


@pytest.mark.parametrize("name", list(APP_JOBS))
def test_an_app_run_is_the_zoom_run_of_its_job(name: str, photos: Path, tmp_path: Path) -> None:
    from chainzoom.app.jobs import AppFolder, Job, ModelCache, run_job

    options = ZOOMS[name]
    folder = AppFolder(tmp_path / "app")
    upload = folder.accept(photos / "cat.png")
    job = Job(
        upload.path,
        float(SCALE),
        (0.5, 0.5),
        options.get("mode", "chain"),
        options.get("backbone", "realesrgan"),
        "null",
        options.get("consistency", "anchor" if options.get("mode", "chain") == "chain" else "none"),
    )
    out, _, states = run_job(folder, ModelCache("cpu"), job)
    list(states)
    zoom = by_cli_file(upload.path, tmp_path / "zoom", options)
    assert summary(out) == summary(zoom)


FULLS = {
    "anchor": {"backbone": "bicubic"},
    "none": {"backbone": "lanczos", "consistency": "none"},
    "wavelet": {"backbone": "bicubic", "consistency": "wavelet"},
}


def full_summary(folder: Path) -> dict[str, Any]:
    manifest = summary(folder)["manifest"]
    for level in manifest["levels"]:
        for key in ("tiles_made", "backbone_seconds", "anchor_seconds", "workers"):
            level.pop(key, None)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("level_*.png"))}
    return {"files": files, "manifest": manifest}


@pytest.mark.parametrize("name", list(FULLS))
def test_full_image_runs_are_the_same_from_the_cli_and_the_api(name: str, photos: Path, tmp_path: Path) -> None:
    photo = tmp_path / "small.png"  # 64 px and 128 px tiles: 1 tile, then 9
    Image.open(photos / "cat.png").resize((64, 64)).save(photo)
    options = FULLS[name]
    cli = tmp_path / "cli"
    args = ["zoom", str(photo), "--full", "--scale", "16", "--format", "png", "--tile", "128", "--out", str(cli)]
    assert main([*args, "-q", "--device", "cpu", *flags(options)]) == 0
    rest = dict(options)
    cz = ChainZoom(rest.pop("backbone"), runtime=Runtime(device="cpu", tile=128))
    cz(photo, 4.0, out=tmp_path / "before")  # an earlier call must not change the full run
    cz.zoom_full(photo, tmp_path / "api", 16.0, format="png", **rest)
    assert full_summary(cli) == full_summary(tmp_path / "api")
