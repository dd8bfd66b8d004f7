"""``chainzoom view``: a stdlib HTTP server on 127.0.0.1 for one run folder.

Routes: ``/`` the page, ``/static/...`` the viewer's own files, ``/layers.json``
what to show (:mod:`.layers`), ``/files/...`` the run folder's files (nothing
outside it), ``/tiff/NAME.dzi`` and ``/tiff/NAME_files/L/C_R.jpg`` Deep Zoom cut
from ``NAME.tif`` on request (:mod:`.tiles`). It binds to the loopback address only:
a run folder is private data and the server has no access control.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
import webbrowser
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO, cast
from urllib.parse import unquote, urlsplit

from chainzoom.errors import ChainZoomError
from chainzoom.viewer.layers import FILES, TIFF_DZI, describe_run
from chainzoom.viewer.tiles import TiffDeepZoom

HOST = "127.0.0.1"
STATIC = Path(__file__).resolve().parent / "static"
_TIFF_TILE = re.compile(r"^(?P<name>[\w.-]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.jpe?g$")
_TIFF_DZI = re.compile(r"^(?P<name>[\w.-]+)\.dzi$")


class RunViewer:
    """What the handler serves: one run folder, with its TIFFs opened once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ChainZoomError(f"{folder} is not a folder")
        describe_run(self.folder)  # fail now, not in the browser, if it is no run
        self._tiffs: dict[str, TiffDeepZoom] = {}
        self._lock = threading.Lock()

    def layers(self) -> dict:
        """Read afresh per request, so a run still going shows its new levels on reload."""
        return describe_run(self.folder)

    def file(self, relative: str) -> Path | None:
        """A file of the run folder, or ``None`` for anything outside it or missing."""
        path = (self.folder / relative).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            return None
        return path

    def tiff(self, name: str) -> TiffDeepZoom | None:
        path = self.file(name + ".tif")
        if path is None:
            return None
        with self._lock:
            if name not in self._tiffs:
                self._tiffs[name] = TiffDeepZoom(path)
            return self._tiffs[name]


class ViewerHandler(BaseHTTPRequestHandler):
    """GET-only handler over a :class:`RunViewer`."""

    server_version = "chainzoom-view"

    def __init__(self, *args, viewer: RunViewer, log: TextIO | None, **kwargs) -> None:
        self.viewer = viewer
        self.log = log
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        try:
            if path in ("/", "/index.html"):
                self._send_file(STATIC / "index.html")
            elif path == "/layers.json":
                self._send(json.dumps(self.viewer.layers()).encode(), "application/json")
            elif path.startswith("/static/"):
                target = (STATIC / path[len("/static/") :]).resolve()
                self._send_file(target if target.is_relative_to(STATIC) else None)
            elif path.startswith(FILES):
                self._send_file(self.viewer.file(path[len(FILES) :]))
            elif path.startswith(TIFF_DZI):
                self._tiff(path[len(TIFF_DZI) :])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except ChainZoomError as exc:
            self.send_error(HTTPStatus.NOT_FOUND, str(exc))

    def _tiff(self, rest: str) -> None:
        descriptor, tile = _TIFF_DZI.match(rest), _TIFF_TILE.match(rest)
        found = descriptor or tile
        source = self.viewer.tiff(found["name"]) if found else None
        if source is None:
            self.send_error(HTTPStatus.NOT_FOUND)
        elif descriptor:
            self._send(source.descriptor().encode(), "application/xml")
        else:
            assert tile is not None  # neither pattern matched gives no source
            data = source.tile(int(tile["level"]), int(tile["col"]), int(tile["row"]))
            if data is None:
                self.send_error(HTTPStatus.NOT_FOUND)
            else:
                self._send(data, "image/jpeg")

    def _send_file(self, path: Path | None) -> None:
        if path is None or not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        kind = "application/xml" if path.suffix == ".dzi" else mimetypes.guess_type(path.name)[0]
        self._send(path.read_bytes(), kind or "application/octet-stream")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        if self.log is not None:
            self.log.write(f"{self.address_string()} {format % args}\n")


def make_server(folder: Path, port: int = 0, log: TextIO | None = None) -> ThreadingHTTPServer:
    """A server for ``folder`` bound to 127.0.0.1:``port`` (0: any free port), not yet serving."""
    viewer = RunViewer(folder)
    try:
        server = ThreadingHTTPServer((HOST, port), partial(ViewerHandler, viewer=viewer, log=log))
    except OSError as exc:
        raise ChainZoomError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}; try --port 0") from None
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    # bound to an AF_INET address, so the host reads back as a str
    host, port = cast(tuple[str, int], server.server_address[:2])
    return f"http://{host}:{port}/"


def serve(folder: Path, port: int, open_browser: bool = False, log: TextIO | None = None) -> None:
    """Serve ``folder`` until Ctrl+C (a normal way to stop a viewer, not an error); print the URL first."""
    server = make_server(folder, port, log)
    url = url_of(server)
    print(f"Viewing {Path(folder)} at {url} (Ctrl+C to stop)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
