"""Every chainzoom server, started on 127.0.0.1 for a test and stopped at its end: one context manager each.

Each takes a scratch folder, makes what the server needs in it (a run, a study, an app
folder) and yields the server's base URL (``http://127.0.0.1:PORT``, no slash).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chainzoom.viewer.server import bound_address

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[str]:
    """Serve ``server`` in a thread; its base URL; shut down and closed at the end."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = bound_address(server)
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def tiff_run(folder: Path) -> Path:
    """A one-level ``--full`` TIFF run of a 150x100 crop of the sample (a second on 2 cores)."""
    from chainzoom.backbones import create_backbone
    from chainzoom.io.images import LoadedImage, load_image
    from chainzoom.runtime import Runtime
    from tests.fullrun import make_full_run

    rgb = load_image(SAMPLE).rgb[:, :100, :150].contiguous()
    backbone = create_backbone("bicubic", Runtime(device="cpu"))
    make_full_run(
        LoadedImage(rgb, None, 8, None), folder, backbone, None, levels=1, fmt="tiff", tile=256, overlap=32, request={}
    )
    (folder / ".chainzoom.lock").write_text("a run's lock file\n")
    return folder


@contextmanager
def viewer(folder: Path, log: Any = None) -> Iterator[str]:
    """``chainzoom view`` of a TIFF run."""
    from chainzoom.viewer.server import make_server

    with running(make_server(tiff_run(folder / "run"), 0, log)) as url:
        yield url


def small_study(folder: Path) -> Path:
    """A study of two interpolation methods on 160x120 crops of the bundled photos, x16."""
    from chainzoom.study.create import create_study
    from tests.study.conftest import make_runs

    runs = make_runs(folder / "runs", methods=("bicubic", "nearest"), scale=16)
    create_study(runs, folder / "study", seed=1)
    return folder / "study"


@contextmanager
def study(folder: Path, log: Any = None) -> Iterator[str]:
    """``chainzoom study serve`` of a small study."""
    from chainzoom.study.serve import make_server

    with running(make_server(small_study(folder), port=0, log=log)) as url:
        yield url


@contextmanager
def app(folder: Path, **options: Any) -> Iterator[str]:
    """``chainzoom app`` (Gradio: a few seconds to start) with an empty app folder."""
    from chainzoom.app.server import launch

    port = free_port()
    demo = launch(folder / "app", port=port, block=False, **options)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        demo.chainzoom_viewers.close()
