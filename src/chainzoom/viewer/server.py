"""``chainzoom view``: a stdlib HTTP server on 127.0.0.1 for one run folder.

Routes: ``/`` the page, ``/static/...`` the viewer's own files, ``/layers.json``
what to show (:mod:`.layers`), ``/files/...`` the run folder's files (nothing
outside it), ``/tiff/NAME.dzi`` and ``/tiff/NAME_files/L/C_R.jpg`` Deep Zoom cut
from ``NAME.tif`` on request (:mod:`.tiles`). It binds to the loopback address only:
a run folder is private data and the server has no access control. For the same
reason it answers only requests addressed to it (``Host`` 127.0.0.1:PORT or
localhost:PORT): a web page that rebinds its own DNS name to 127.0.0.1 reaches the
socket, but gets 403. Files are streamed, never read whole. Every reply, an error
included, is one log line, and so is a client that goes away mid-reply (an aborted
download): a hostile or odd request costs a line, never a traceback.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import threading
import webbrowser
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from chainzoom.errors import ChainZoomError
from chainzoom.serving import HOST, HOST_NAMES, MAX_PORT, Handler, Server, bound_address, check_port, url_of
from chainzoom.serving import make_server as make_http_server
from chainzoom.viewer.layers import FILES, TIFF_DZI, describe_run
from chainzoom.viewer.tiles import TiffDeepZoom

__all__ = ["HOST", "HOST_NAMES", "MAX_PORT", "bound_address", "inside", "make_server", "serve", "url_of"]

STATIC = Path(__file__).resolve().parent / "static"
#: A level, column or row has at most 9 digits: no image has 2**10**9 pixels, and ``int()`` of
#: thousands of digits raises.
_TIFF_TILE = re.compile(r"(?P<name>[\w.-]+)_files/(?P<level>[0-9]{1,9})/(?P<col>[0-9]{1,9})_(?P<row>[0-9]{1,9})\.jpe?g")
_TIFF_DZI = re.compile(r"(?P<name>[\w.-]+)\.dzi")


def inside(root: Path, relative: str) -> Path | None:
    """The file ``root / relative`` once links are resolved, or ``None`` if it is outside ``root`` or no file.

    A hidden name (``.chainzoom.lock``, a temporary file) is no file to serve, and neither is a
    name the system refuses (too long, say): it comes from a URL.
    """
    if any(part.startswith(".") for part in relative.replace("\\", "/").split("/")):
        return None
    try:
        path = (root / relative).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None
    except (OSError, ValueError):
        return None


class RunViewer:
    """What the handler serves: one run folder, with its TIFFs opened once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ChainZoomError(f"{folder} is not a folder")
        describe_run(self.folder)  # fail now, not in the browser, if it is no run
        #: Opened TIFFs by name, with the (mtime, size) they were opened at: a level rewritten by
        #: an ``--overwrite`` run is opened afresh instead of serving the old file's tiles.
        self._tiffs: dict[str, tuple[tuple[int, int], TiffDeepZoom]] = {}
        self._lock = threading.Lock()

    def layers(self) -> dict:
        """Read afresh per request, so a run still going shows its new levels on reload."""
        return describe_run(self.folder)

    def file(self, relative: str) -> Path | None:
        """A file of the run folder, or ``None`` for anything outside it or missing."""
        return inside(self.folder, relative)

    def tiff(self, name: str) -> TiffDeepZoom | None:
        path = self.file(name + ".tif")
        if path is None:
            return None
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._tiffs.get(name)
            if cached is None or cached[0] != stamp:
                cached = (stamp, TiffDeepZoom(path))
                self._tiffs[name] = cached
            return cached[1]


class ViewerHandler(Handler):
    """GET (and HEAD) over a :class:`RunViewer`."""

    server_version = "chainzoom-view"

    def __init__(self, *args: Any, viewer: RunViewer, **kwargs: Any) -> None:
        self.viewer = viewer
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self.refuse_foreign_host():
            return
        path = unquote(urlsplit(self.path).path)
        if "\0" in path:  # no file has one in its name; pathlib would raise on it
            self.send_error(HTTPStatus.BAD_REQUEST, explain="a NUL byte in the path")
            return
        try:
            if path in ("/", "/index.html"):
                self._send_file(STATIC / "index.html")
            elif path == "/layers.json":
                self.send_reply(json.dumps(self.viewer.layers()).encode(), "application/json", cache="no-cache")
            elif path.startswith("/static/"):
                self._send_file(inside(STATIC, path[len("/static/") :]))
            elif path.startswith(FILES):
                self._send_file(self.viewer.file(path[len(FILES) :]))
            elif path.startswith(TIFF_DZI):
                self._tiff(path[len(TIFF_DZI) :])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except ChainZoomError as exc:  # what the run does not hold (yet), or holds unreadable
            self.send_error(HTTPStatus.NOT_FOUND, explain=self._public(str(exc)))

    def _public(self, text: str) -> str:
        """``text`` with the run folder's place on this machine left out: a client learns no server path."""
        folder = str(self.viewer.folder)
        return text.replace(folder + os.sep, "").replace(folder, ".")

    def _tiff(self, rest: str) -> None:
        descriptor, tile = _TIFF_DZI.fullmatch(rest), _TIFF_TILE.fullmatch(rest)
        found = descriptor or tile
        source = self.viewer.tiff(found["name"]) if found else None
        if source is None:
            self.send_error(HTTPStatus.NOT_FOUND)
        elif descriptor:
            self.send_reply(source.descriptor().encode(), "application/xml", cache="no-cache")
        else:
            assert tile is not None  # neither pattern matched gives no source
            data = source.tile(int(tile["level"]), int(tile["col"]), int(tile["row"]))
            if data is None:
                self.send_error(HTTPStatus.NOT_FOUND)
            else:
                self.send_reply(data, "image/jpeg", cache="no-cache")

    def _send_file(self, path: Path | None) -> None:
        """Stream ``path`` by ``sendfile``, the kernel copying file to socket: no level is held in memory."""
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            source = path.open("rb")
        except OSError as exc:
            self.send_error(HTTPStatus.NOT_FOUND, explain=f"{path.name}: {exc.strerror or exc}")
            return
        with source:
            size = os.fstat(source.fileno()).st_size
            kind = "application/xml" if path.suffix == ".dzi" else mimetypes.guess_type(path.name)[0]
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if size and self.command != "HEAD":  # count: a file that grows meanwhile still sends what it said
                self.connection.sendfile(source, count=size)


def make_server(folder: Path, port: int = 0, log: TextIO | None = None) -> Server:
    """A server for ``folder`` bound to 127.0.0.1:``port`` (0: any free port), not yet serving."""
    check_port(port)  # before the folder: a bad flag is named first
    return make_http_server(HOST, port, partial(ViewerHandler, viewer=RunViewer(folder), log=log), log)


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
