"""The Ray executor on a local cluster: the same bytes as a local run, worker and driver faults.

The module starts one Ray head bound to 127.0.0.1 (2 CPUs, no dashboard) for all its
tests and ends it, by its process group, at the end. Backbones are interpolation
(bicubic), so every check is about scheduling and files, not models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from chainzoom import ChainZoom
from chainzoom.backbones import create_backbone
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.cli import main
from chainzoom.runtime import Runtime

pytest.importorskip("pyvips", reason="full-image mode needs the [tiles] extra (pyvips)")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"
BIN = Path(sys.executable).parent
HAS_RAY = shutil.which("ray", path=str(BIN)) is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs the [ray] extra")
#: A full-image run of two levels; the fixed prompter makes every tile carry its neighbourhood to the workers.
FULL = [
    "--full",
    "--scale",
    "16",
    "--backbone",
    "bicubic",
    "--prompter",
    "fixed:fur",
    "--tile",
    "32",
    "--tile-overlap",
    "8",
    "-q",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head on 127.0.0.1 for this module; its workers import this checkout."""
    if not HAS_RAY:
        pytest.skip("needs the [ray] extra")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="czray-", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "RAY_USAGE_STATS_ENABLED": "0"}
    # A private, short-lived test cluster: without this, a token file some earlier local
    # Ray left in ~/.ray turns token authentication on for the head but not for its clients.
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    command = [str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1"]
    command += ["--port", str(port), "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)]
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = head.communicate(timeout=120)
    assert head.returncode == 0, output.decode(errors="replace")[-2000:]
    import ray

    # The runs made in this process share one connection (a run joins it, as an API
    # user's own ray.init, rather than connecting anew); subprocess drivers connect themselves.
    ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        # Every daemon of this cluster is in the process group `ray start` led.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px detailed crop of the bundled photo."""
    path = tmp_path_factory.mktemp("in") / "small.png"
    Image.open(SAMPLE).convert("RGB").crop((150, 80, 214, 144)).save(path)
    return path


@pytest.fixture(scope="module")
def local_full(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local executor's full-image run of ``small`` (the reference)."""
    out = tmp_path_factory.mktemp("local") / "full"
    assert main(["zoom", str(small), *FULL, "--out", str(out)]) == 0
    return out


class SlowBicubic(Backbone):
    """Bicubic 4x that takes a while per tile, so a worker can be killed mid-level."""

    scale = 4

    def __init__(self) -> None:
        self.inner = create_backbone("bicubic", Runtime(device="cpu"))

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        time.sleep(0.03)
        return self.inner.upscale(image, prompt)

    def card(self) -> ModelCard:
        return self.inner.card()


def level_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("level_*.tif"))}


def level_pixels(out: Path) -> dict[str, bytes]:
    """Each level's decoded pixels: a run of another backbone object says so in its files' marking."""
    import pyvips

    return {
        path.name: pyvips.Image.new_from_file(str(path)).write_to_memory() for path in sorted(out.glob("level_*.tif"))
    }


def run_files(out: Path) -> dict[str, bytes]:
    """Every file of a run folder but the manifest (which records the executor) and the lock."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", ".chainzoom.lock")
    }


def test_missing_ray_is_one_line_and_exit_2(monkeypatch, small: Path, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "chainzoom.runs.ray_executor", raising=False)
    out = tmp_path / "out"
    full = [a for a in FULL if a != "-q"]  # with the progress bars on: still exactly one line
    assert main(["zoom", str(small), *full, "--out", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert (
        len(err.splitlines()) == 1
        and err.startswith("chainzoom: error: --executor")
        and "pip install 'chainzoom[ray]'" in err
    )
    assert not out.exists()


@needs_ray
@pytest.mark.parametrize("command", ["zoom --full", "zoom", "eval"])
def test_an_address_where_nothing_answers_is_one_line_and_exit_2(
    command: str, small: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = {
        "zoom --full": ["zoom", str(small), *[a for a in FULL if a != "-q"]],
        "zoom": ["zoom", str(small), str(small), "--backbone", "bicubic"],
        "eval": ["eval", "--images", str(small), "--backbone", "bicubic", "--metrics", "entropy"],
    }[command]
    started = time.monotonic()
    code = main([*args, "--out", str(out), "--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err  # progress bars on: still exactly one line
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("chainzoom: error: --ray-address: ")
    assert "no Ray cluster answers" in err
    assert time.monotonic() - started < 30  # ray.init alone would wait minutes
    assert not out.exists()


def test_ray_flags_without_the_ray_executor_are_refused(small: Path, tmp_path: Path, capsys) -> None:
    assert main(["zoom", str(small), "--out", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers: applies only with executor ray" in capsys.readouterr().err


def test_where_a_run_is_made_is_not_part_of_its_identity() -> None:
    from chainzoom.config import FullConfig, ZoomConfig, identity

    for cls in (ZoomConfig, FullConfig):
        ray = cls(backbone="bicubic", executor="ray", ray_address="10.0.0.1:6379", workers=8)
        assert identity(ray) == identity(cls(backbone="bicubic"))  # a local run resumes on Ray and back


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"executor": "dask"}, "executor: must be one of local, ray, got 'dask'"),
        ({"executor": "ray", "workers": 0}, "workers: must be at least 1, got 0"),
        ({"ray_address": "h:1"}, "ray_address: applies only with executor ray"),
    ],
)
def test_executor_options_are_checked_with_the_config(options: dict, problem: str) -> None:
    from chainzoom.config import EvalConfig
    from chainzoom.errors import OptionError

    with pytest.raises(OptionError, match=problem):
        EvalConfig(backbone="bicubic", **options)


@pytest.mark.ray
def test_ray_full_image_equals_local_and_records_the_workers(
    ray_address: str, small: Path, local_full: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    assert main(["zoom", str(small), *FULL, "--out", str(out), "--executor", "ray", "--ray-address", ray_address]) == 0
    assert level_bytes(out) == level_bytes(local_full) and len(level_bytes(out)) == 3
    prompts = [json.loads((out / f"level_{i:02d}_prompts.json").read_text()) for i in (1, 2)]
    assert prompts == [json.loads((local_full / f"level_{i:02d}_prompts.json").read_text()) for i in (1, 2)]
    assert {tile["prompt"] for tile in prompts[1]["tiles"]} == {"fur"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["executor"] == {"kind": "ray", "address": ray_address, "workers": 2}
    for level in manifest["levels"][1:]:
        made = [tile for tiles in level["workers"].values() for tile in tiles]
        assert len(made) == len(set(made)) == level["tiles"]
        assert all(worker.startswith("ray:") for worker in level["workers"])
    assert len(manifest["levels"][2]["workers"]) == 2  # both actors made tiles
    local = json.loads((local_full / "manifest.json").read_text())
    assert local["executor"] == {"kind": "local"} and all(w.startswith("local:") for w in local["levels"][2]["workers"])


@pytest.mark.ray
def test_ray_folder_run_equals_local(ray_address: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    image = Image.open(SAMPLE).convert("RGB")
    for index in range(3):
        image.crop((100 + 40 * index, 80, 196 + 40 * index, 176)).save(photos / f"p{index}.png")
    options = {"backbone": "bicubic", "prompter": "fixed:a cat, fur"}
    local = ChainZoom(**options).zoom_batch(photos, tmp_path / "local", scale=64)
    args = ["zoom", str(photos), "--scale", "64", "--backbone", "bicubic", "--prompter", "fixed:a cat, fur", "-q"]
    assert main([*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", ray_address]) == 0
    for folder in local:
        files = run_files(folder)
        assert "step_03.png" in files and "zoom.webp" in files
        assert run_files(tmp_path / "ray" / folder.name) == files
        manifest = json.loads((tmp_path / "ray" / folder.name / "manifest.json").read_text())
        assert [s["prompt"] for s in manifest["states"][1:]] == ["a cat, fur"] * 3
        assert manifest["executor"]["kind"] == "ray" and manifest["executor"]["worker"].startswith("ray:")
        assert all(s["worker"] == manifest["executor"]["worker"] for s in manifest["states"][1:])


@pytest.mark.ray
def test_ray_evaluation_equals_local(ray_address: str, tmp_path: Path) -> None:
    args = ["eval", "--images", "assets/photos/chelsea.png", "--scales", "4,16", "--backbone", "bicubic"]
    args += ["--view", "64", "--modes", "chain,bicubic", "--metrics", "entropy", "-q"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", ray_address]) == 0
    measured = [
        [line for line in (tmp_path / where / "results.csv").read_text().splitlines() if ",seconds," not in line]
        for where in ("ray", "local")
    ]
    assert measured[0] == measured[1]  # every value but the seconds each run took
    runs = sorted((tmp_path / "ray" / "runs").rglob("manifest.json"))
    assert len(runs) == 6  # chain and bicubic, at x1 and for fidelity at x4 and x16
    for manifest in runs:
        assert json.loads(manifest.read_text())["executor"]["kind"] == "ray"
        folder = manifest.parent
        assert run_files(folder) == run_files(tmp_path / "local" / folder.relative_to(tmp_path / "ray"))


@pytest.mark.ray
def test_a_worker_killed_mid_level_still_completes_with_equal_output(
    ray_address: str, small: Path, local_full: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    killed: list[int] = []

    def kill_one_worker(level: int, done: int, total: int) -> None:
        log = out / "tiles" / f"level_{level:02d}" / "workers.tsv"
        if level == 2 and done >= 6 and not killed and log.exists():
            pid = int(log.read_text().splitlines()[0].split("\t")[1].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    pipeline = ChainZoom(SlowBicubic(), "null", runtime=Runtime(device="cpu", tile=32, tile_overlap=8))
    manifest = pipeline.zoom_full(
        small, out, 16, on_tile=kill_one_worker, executor="ray", ray_address=ray_address, workers=2
    )
    assert killed and manifest["complete"]
    assert level_pixels(out) == level_pixels(local_full)  # an object (SlowBicubic) is not the spec bicubic
    workers = manifest["levels"][2]["workers"]
    assert any(w.endswith(f":{killed[0]}") for w in workers)  # it made tiles before it died...
    assert sum(map(len, workers.values())) == manifest["levels"][2]["tiles"]  # ...and every tile was made
    assert len(workers) >= 2


@pytest.mark.ray
def test_a_killed_driver_resumes_from_the_written_tiles(
    ray_address: str, small: Path, local_full: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    args = [sys.executable, "-m", "chainzoom.cli", "zoom", str(small), *FULL, "--out", str(out)]
    args += ["--executor", "ray", "--ray-address", ray_address]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cache = out / "tiles" / "level_02"  # 121 tiles (y*.npy: not the temporary files of a killed write)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and driver.poll() is None:
        if cache.is_dir() and len(list(cache.glob("y*.npy"))) >= 10:
            break
        time.sleep(0.01)
    assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr.read().decode()[-800:]}"
    driver.kill()
    driver.wait()
    made_before = len(list(cache.glob("y*.npy")))
    assert not (out / "level_02.tif").exists() and made_before >= 10
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-800:]
    manifest = json.loads((out / "manifest.json").read_text())
    level = manifest["levels"][2]
    assert manifest["complete"] and level["tiles_made"] <= level["tiles"] - made_before
    # The tiles of the killed run are recorded under its workers, the rest under the rerun's.
    assert sum(map(len, level["workers"].values())) == level["tiles"]
    assert level_bytes(out) == level_bytes(local_full)


#: The matrix's option sets that the Ray executor takes (the adaptive policy runs locally only).
RAY_ZOOMS = ("chain", "chain-none-lanczos", "direct", "nearest", "official-chain", "official-onestep")


@pytest.mark.ray
def test_the_matrix_runs_the_same_on_ray_actors(ray_address: str, tmp_path: Path) -> None:
    """The equivalence matrix's Ray leg: each option set through ``zoom --executor ray`` on a folder
    and ``zoom_batch(executor="ray")`` makes the run ``chainzoom zoom`` makes locally."""
    from .test_equivalence import ZOOMS, by_cli_file, flags, summary

    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(SAMPLE) as sample:
        sample.convert("RGB").crop((120, 60, 312, 252)).save(photos / "cat.png")
        sample.convert("RGB").crop((0, 0, 200, 192)).save(photos / "corner.png")
    ray = ["--executor", "ray", "--ray-address", ray_address]
    for name in RAY_ZOOMS:
        options = ZOOMS[name]
        args = ["zoom", str(photos), "--scale", "16", "--out", str(tmp_path / "cli" / name), "-q", "--device", "cpu"]
        assert main([*args, *flags(options), *ray]) == 0
        rest = dict(options)
        pipeline = ChainZoom(rest.pop("backbone", None), runtime=Runtime(device="cpu"))
        pipeline.zoom_batch(photos, tmp_path / "api" / name, 16.0, executor="ray", ray_address=ray_address, **rest)
        for photo in sorted(photos.iterdir()):
            local = summary(by_cli_file(photo, tmp_path / "local" / name / photo.stem, options))
            for front in ("cli", "api"):
                assert summary(tmp_path / front / name / photo.stem) == local, f"{front} on Ray differs: {name}"
