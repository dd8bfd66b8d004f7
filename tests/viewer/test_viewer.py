"""``chainzoom view``: the server answers page, layers, Deep Zoom and deepest tiles; Chromium shows them."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from chainzoom.backbones import create_backbone
from chainzoom.cli import main
from chainzoom.io.images import LoadedImage, load_image
from chainzoom.runtime import Runtime
from chainzoom.viewer.server import make_server, url_of

from ..fullrun import make_full_run

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
    """A two-level --full run (x16) of a crop of the sample, as pyramidal TIFFs.

    It takes 2-6 s on 2 shared cores, so every test that uses it is marked slow (or browser)."""
    out = tmp_path_factory.mktemp("full")
    rgb = load_image(SAMPLE).rgb[:, 60:260, 100:400].contiguous()
    make_full_run(
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


@pytest.mark.slow
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
    make_full_run(
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


@pytest.mark.slow
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


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_headless_chromium_zooms_to_the_deepest_level(full_run: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright ([test] extra)")
    artifacts = Path(os.environ.get("CHAINZOOM_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "viewer-deepest.png"
    log = RequestLog()
    with serving(full_run, log) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.set_default_timeout(90_000)
            page.goto(url + "?deepest")
            page.wait_for_selector('body[data-deepest="loaded"]', state="attached")
            # A loaded tile is drawn on a later animation frame: wait for the picture, not a fixed time.
            deadline = time.monotonic() + 60
            while True:
                page.screenshot(path=str(shot))
                screenshot = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
                if screenshot[100:, :].std() > 10 or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(500)
        finally:
            browser.close()
    assert any(re.search(r"GET /tiff/level_02_files/13/\d+_\d+\.jpg HTTP/1\.1\" 200", line) for line in log.lines)
    assert screenshot.shape[:2] == (700, 900)
    assert screenshot[100:, :].std() > 10, "the viewer area is blank"


# --- hardening: every odd request a status and one log line, never a traceback ----------------

BIG = 64 << 20  # bytes: far more than any socket buffer, so a reply of it is still being written


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory) -> Path:
    """A one-level TIFF run with odd files beside it: text named .tif, a TIFF cut short, 64 MiB, a link out."""
    out = tmp_path_factory.mktemp("odd")
    rgb = load_image(SAMPLE).rgb[:, :100, :150].contiguous()
    make_full_run(
        LoadedImage(rgb, None, 8, None),
        out,
        create_backbone("bicubic", Runtime(device="cpu")),
        None,
        levels=1,
        fmt="tiff",
        tile=256,
        overlap=32,
        request={},
    )
    (out / "fake.tif").write_text("not a TIFF at all\n")
    level = (out / "level_01.tif").read_bytes()
    (out / "cut.tif").write_bytes(level[: len(level) // 2])
    with open(out / "big.bin", "wb") as big:
        big.truncate(BIG)  # sparse: costs no disk
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("private\n")
    (out / "link.txt").symlink_to(secret)
    return out


def status(url: str, path: str, host: str | None = None) -> int:
    """The status of ``GET /path`` sent with ``Host: host`` (default: the server's own address).

    A dropped connection raises: it is what these tests rule out.
    """
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=TIMEOUT)
    try:
        connection.putrequest("GET", "/" + path, skip_host=True)
        connection.putheader("Host", host or address.netloc)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def assert_one_line_each(url: str, log: RequestLog, cases: list[tuple[str, int]], host: str | None = None) -> None:
    for path, expected in cases:
        before = len(log.lines)
        assert status(url, path, host) == expected, path
        new = log.lines[before:]
        assert len(new) == 1 and f'" {expected} ' in new[0] and new[0].count("\n") == 1, (path, new)


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_a_port_outside_0_to_65535_is_one_line_and_exit_2(odd_run: Path, port: str, capsys) -> None:
    assert main(["view", str(odd_run), "--port", port]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"chainzoom: error: --port: must be 0..65535, got {port}\n"
    assert "Viewing" not in captured.out  # refused before anything started


def test_a_nul_byte_in_the_path_is_400_and_one_log_line(odd_run: Path, capsys) -> None:
    log = RequestLog()
    with serving(odd_run, log) as url:
        assert_one_line_each(
            url, log, [(p, 400) for p in ("files/%00", "files/level_01.tif%00.png", "static/%00", "%00")]
        )
        assert status(url, "files/level_01.tif") == 200  # the connection and the server are fine after them
    assert "Traceback" not in capsys.readouterr().err


def test_names_the_system_refuses_links_out_and_traversal_are_404(odd_run: Path, capsys) -> None:
    log = RequestLog()
    long = "a" * 300  # longer than a file name may be (ENAMETOOLONG)
    with serving(odd_run, log) as url:
        cases = [f"files/{long}", f"static/{long}", f"tiff/{long}.dzi", "files/link.txt", "files/%2e%2e/x", "files/"]
        assert_one_line_each(url, log, [(path, 404) for path in cases])
    assert "Traceback" not in capsys.readouterr().err


def test_a_file_named_tif_that_libvips_cannot_read_is_404_with_its_reason(odd_run: Path, capsys) -> None:
    log = RequestLog()
    with serving(odd_run, log) as url:
        for name in ("fake", "cut"):
            assert_one_line_each(url, log, [(f"tiff/{name}.dzi", 404), (f"tiff/{name}_files/0/0_0.jpg", 404)])
            assert f"{name}.tif is not a readable TIFF" in log.lines[-1]
        # libvips reads pixels lazily: a TIFF that shrinks after the viewer opened it fails at the tile
        shutil.copy(odd_run / "level_01.tif", odd_run / "shrinks.tif")
        assert_one_line_each(url, log, [("tiff/shrinks.dzi", 200), ("tiff/shrinks_files/10/0_0.jpg", 200)])
        os.truncate(odd_run / "shrinks.tif", 1000)
        assert_one_line_each(url, log, [("tiff/shrinks_files/10/1_0.jpg", 404)])
        assert "shrinks.tif is not a readable TIFF" in log.lines[-1]
        assert status(url, "tiff/level_01.dzi") == 200
    assert "Traceback" not in capsys.readouterr().err


def test_only_requests_for_this_host_are_answered(odd_run: Path, capsys) -> None:
    log = RequestLog()
    with serving(odd_run, log) as url:
        port = urlsplit(url).port
        assert_one_line_each(url, log, [("layers.json", 200)], host=f"localhost:{port}")
        assert_one_line_each(url, log, [("", 200)], host=f"LocalHost:{port}")
        for host in (f"evil.example:{port}", "evil.example", "127.0.0.1", f"127.0.0.1:{port + 1}", f"[::1]:{port}"):
            assert_one_line_each(url, log, [("layers.json", 403), ("files/level_01.tif", 403)], host=host)
        for request in (  # no Host at all; two of them
            b"GET /layers.json HTTP/1.0\r\n\r\n",
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n".encode(),
        ):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client,
                client.makefile("rb") as reply,
            ):
                client.sendall(request)
                assert reply.readline().split()[1] == b"403", request
    assert "Traceback" not in capsys.readouterr().err


def test_files_are_streamed_not_read_whole(odd_run: Path) -> None:
    with serving(odd_run) as url:
        tracemalloc.start()
        try:
            with urllib.request.urlopen(url + "files/big.bin", timeout=TIMEOUT) as response:
                assert response.headers["Content-Length"] == str(BIG)
                received = 0
                while chunk := response.read(1 << 20):
                    received += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert received == BIG
    assert peak < BIG // 8, f"serving {BIG >> 20} MiB took {peak >> 20} MiB of Python memory"


def test_a_client_gone_mid_reply_is_one_log_line(odd_run: Path, capsys) -> None:
    log = RequestLog()
    with serving(odd_run, log) as url:
        port = urlsplit(url).port
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(f"GET /files/big.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert client.recv(1 << 16)  # the reply has begun
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        for _ in range(100):  # the server notices at its next write
            if any("closed the connection" in line for line in log.lines):
                break
            time.sleep(0.05)
        assert status(url, "layers.json") == 200
    gone = [line for line in log.lines if "closed the connection" in line]
    assert len(gone) == 1 and "/files/big.bin" in gone[0] and gone[0].count("\n") == 1, log.lines
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([], "a JSON list, not an object"),
        (
            {"request": {}, "mode": "full", "levels": [{"magnification": 1, "size": [4, 4]}]},
            "level 0 has no valid file",
        ),
        (
            {"request": {}, "states": [{"index": 0, "file": "step_00.png", "magnification": 1}]},
            "state 0 has no valid box",
        ),
    ],
)
def test_a_broken_manifest_is_one_line_in_the_viewer(tmp_path, capsys, content, problem):
    from chainzoom.cli import main

    (tmp_path / "manifest.json").write_text(json.dumps(content))
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        f"chainzoom: error: {tmp_path / 'manifest.json'} is not a chainzoom manifest ({problem})\n"
    )


def test_a_level_rewritten_while_serving_is_served_anew(tmp_path: Path) -> None:
    """An ``--overwrite`` run replaces a level the viewer has open: its new size is served, not the old."""
    import shutil

    rgb = load_image(SAMPLE).rgb[:, :64, :96].contiguous()
    make_full_run(
        LoadedImage(rgb, None, 8, None),
        tmp_path,
        create_backbone("bicubic", Runtime(device="cpu")),
        None,
        levels=1,
        fmt="tiff",
        tile=256,
        overlap=32,
        request={},
    )
    with serving(tmp_path) as url:
        assert 'Width="384"' in get(url + "tiff/level_01.dzi").decode()
        other = tmp_path / "other"
        make_full_run(
            LoadedImage(rgb[:, :32, :48].contiguous(), None, 8, None),
            other,
            create_backbone("bicubic", Runtime(device="cpu")),
            None,
            levels=1,
            fmt="tiff",
            tile=256,
            overlap=32,
            request={},
        )
        shutil.copyfile(other / "level_01.tif", tmp_path / "level_01.tif.new")
        (tmp_path / "level_01.tif.new").replace(tmp_path / "level_01.tif")
        assert 'Width="192"' in get(url + "tiff/level_01.dzi").decode()


def test_a_tile_number_of_5000_digits_is_404_and_one_log_line(odd_run: Path, capsys) -> None:
    log = RequestLog()
    with serving(odd_run, log) as url:
        huge = "9" * 5000
        cases = [f"tiff/level_01_files/{huge}/0_0.jpg", f"tiff/level_01_files/0/{huge}_0.jpg", "tiff/level_01_files/1/0_0.jpg%0A"]  # fmt: skip
        assert_one_line_each(url, log, [(path, 404) for path in cases])
        assert status(url, "tiff/level_01_files/10/0_0.jpg") == 200
    assert "Traceback" not in capsys.readouterr().err


def reply(url: str, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=TIMEOUT)
    try:
        connection.request(method, "/" + path)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_head_is_get_without_the_body(odd_run: Path) -> None:
    with serving(odd_run) as url:
        for path in ("", "layers.json", "files/level_01.tif", "tiff/level_01.dzi", "tiff/level_01_files/10/0_0.jpg"):
            got, head = reply(url, path), reply(url, path, "HEAD")
            assert head[0] == got[0] == 200 and head[2] == b"", path
            assert head[1]["Content-Length"] == str(len(got[2])) and head[1]["Content-Type"] == got[1]["Content-Type"]
        assert reply(url, "nothing", "HEAD")[:1] == (404,)


def test_hidden_files_are_not_served_and_errors_name_no_server_path(odd_run: Path) -> None:
    (odd_run / ".chainzoom.lock").write_text("12345\n")
    with serving(odd_run) as url:
        for path in (
            "files/.chainzoom.lock",
            "files/%2echainzoom.lock",
            "tiff/.hidden.dzi",
            "files/sub/../.chainzoom.lock",
        ):
            assert reply(url, path)[0] == 404, path
        for path in ("tiff/fake.dzi", "tiff/cut_files/0/0_0.jpg", "files/nothing", "files/big.bin/x"):
            code, headers, body = reply(url, path)
            text = body.decode()
            assert code == 404 and str(odd_run) not in text and "/tmp" not in text, text
            assert text.count("\n") == 1 and headers["Content-Type"].startswith("text/plain"), text
        assert "fake.tif is not a readable TIFF" in reply(url, "tiff/fake.dzi")[2].decode()
        assert reply(url, "files/x", "PUT")[0] == 405
    server = make_server(odd_run)
    server.server_close()
    assert server.request_queue_size >= 128
