"""``chainzoom view``: the server answers page, layers, Deep Zoom and deepest tiles; Chromium shows them."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chainzoom.backbones import create_backbone
from chainzoom.cli import main
from chainzoom.io.images import LoadedImage, load_image
from chainzoom.runs.full import zoom_full
from chainzoom.runtime import Runtime
from chainzoom.viewer.server import make_server, url_of

pyvips = pytest.importorskip("pyvips", reason="the viewer's TIFF tiles need the [tiles] extra (pyvips)")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"
TIMEOUT = 10


class RequestLog(io.StringIO):
    """The server's access log, kept to see which tiles a browser asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)


@contextmanager
def serving(folder: Path, log: RequestLog | None = None) -> Iterator[str]:
    server = make_server(folder, 0, log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.read()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A two-level --full run (x16) of a crop of the sample, as pyramidal TIFFs."""
    out = tmp_path_factory.mktemp("full")
    rgb = load_image(SAMPLE).rgb[:, 60:260, 100:400].contiguous()
    zoom_full(
        LoadedImage(rgb, None, 8, None),
        out,
        create_backbone("bicubic", Runtime(device="cpu")),
        None,
        levels=2,
        fmt="tiff",
        tile=256,
        overlap=32,
        request={},
    )
    return out


def test_the_server_answers_page_layers_dzi_and_a_deepest_tile(full_run: Path) -> None:
    with serving(full_run) as url:
        assert url.startswith("http://127.0.0.1:")
        page = get(url).decode()
        assert "openseadragon.min.js" in page
        assert b"OpenSeadragon" in get(url + "static/openseadragon/openseadragon.min.js")[:2000]
        layers = json.loads(get(url + "layers.json"))
        assert layers["kind"] == "full" and [layer["label"] for layer in layers["layers"]] == ["x1", "x4", "x16"]
        dzi = get(url + layers["layers"][-1]["source"].lstrip("/")).decode()
        assert 'Width="4800"' in dzi and 'Height="3200"' in dzi and 'TileSize="254"' in dzi
        deepest = 13  # ceil(log2(4800))
        tile = Image.open(io.BytesIO(get(url + "tiff/level_02_files/13/1_2.jpg")))
        assert tile.size == (256, 256)  # 254 + 1 px overlap on both interior sides
        # The tile is the level's own pixels at (253, 507): compare with the TIFF's full-resolution page.
        page0 = pyvips.Image.new_from_file(str(full_run / "level_02.tif")).crop(253, 507, 256, 256)
        truth = np.ndarray(buffer=page0.write_to_memory(), dtype=np.uint8, shape=(256, 256, 3))
        assert np.abs(np.asarray(tile, dtype=np.int16) - truth).mean() < 3
        corner = Image.open(io.BytesIO(get(url + f"tiff/level_02_files/{deepest - 12}/0_0.jpg")))
        assert corner.size == (2, 1)  # 4800x3200 shrunk 4096 times, rounded up
        for missing in (
            "tiff/level_02_files/14/0_0.jpg",
            "tiff/level_02_files/13/99_0.jpg",
            "files/../x",
            "files/%2e%2e/%2e%2e/etc/passwd",
            "tiff/nothing.dzi",
            "nowhere",
        ):
            with pytest.raises(urllib.error.HTTPError) as error:
                get(url + missing)
            assert error.value.code == 404


def test_a_dzi_run_is_served_from_its_files(tmp_path: Path) -> None:
    rgb = load_image(SAMPLE).rgb[:, :100, :150].contiguous()
    zoom_full(
        LoadedImage(rgb, None, 8, None),
        tmp_path,
        create_backbone("bicubic", Runtime(device="cpu")),
        None,
        levels=1,
        fmt="dzi",
        tile=256,
        overlap=32,
        request={},
    )
    with serving(tmp_path) as url:
        source = json.loads(get(url + "layers.json"))["layers"][-1]["source"]
        assert source == "/files/level_01.dzi"
        assert 'Width="600"' in get(url + source.lstrip("/")).decode().replace("\n", " ")
        assert Image.open(io.BytesIO(get(url + "files/level_01_files/10/2_1.jpg"))).size == (93, 147)


def test_a_local_zoom_run_shows_each_state_inside_its_parent(tmp_path: Path) -> None:
    out = tmp_path / "local"
    assert (
        main(
            [
                "zoom",
                str(SAMPLE),
                "--scale",
                "64",
                "--mode",
                "bicubic",
                "--center",
                "0.3,0.6",
                "--out",
                str(out),
                "--no-animation",
                "--quiet",
            ]
        )
        == 0
    )
    with serving(out) as url:
        layers = json.loads(get(url + "layers.json"))["layers"]
        assert layers[0]["source"] == {"type": "image", "url": "/files/step_00.png"}
        assert [layer["label"] for layer in layers] == ["x1", "x4", "x16", "x64"]
        for parent, child in zip(layers, layers[1:]):
            assert child["width"] == pytest.approx(parent["width"] / 4)
            assert parent["x"] <= child["x"] and child["x"] + child["width"] <= parent["x"] + parent["width"]
            assert parent["y"] <= child["y"]
        assert get(url + "files/step_03.png")[:8] == b"\x89PNG\r\n\x1a\n"


VIEW = """
import sys
from chainzoom.cli import main
sys.exit(main(["view", sys.argv[1], "--port", "0"]))
"""


def test_the_view_command_prints_its_url_and_serves_it(full_run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", VIEW, str(full_run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, f"no URL in {line!r}"
        assert "openseadragon" in get(url.group(0)).decode()
    finally:
        child.terminate()
        child.wait(TIMEOUT)
        child.stdout.close()


def test_a_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    from chainzoom.errors import ChainZoomError

    with pytest.raises(ChainZoomError, match="no chainzoom run"):
        make_server(tmp_path)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_headless_chromium_zooms_to_the_deepest_level(full_run: Path, tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("CHAINZOOM_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    log = RequestLog()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=900,700",
        "--virtual-time-budget=15000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    with serving(full_run, log) as url:
        for _attempt in range(2):  # a loaded machine once let the time budget run out first
            browser = subprocess.run(
                [chromium(), *flags, "--dump-dom", url + "?deepest"], capture_output=True, text=True, timeout=90
            )
            if re.search(r'<body[^>]*data-deepest="loaded"', browser.stdout):
                break
        shot = artifacts / "viewer-deepest.png"
        subprocess.run(
            [chromium(), *flags, f"--screenshot={shot}", url + "?deepest"], capture_output=True, timeout=90, check=True
        )
    assert re.search(r'<body[^>]*data-deepest="loaded"', browser.stdout), (
        f"the page saw no deepest-level tile load; chromium said: {browser.stderr[-2000:]}"
    )
    assert any(re.search(r"GET /tiff/level_02_files/13/\d+_\d+\.jpg HTTP/1\.1\" 200", line) for line in log.lines)
    screenshot = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert screenshot.shape[:2] == (700, 900)
    assert screenshot[100:, :].std() > 10, "the viewer area is blank"
