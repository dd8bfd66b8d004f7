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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseServer
from typing import Any, TextIO, cast
from urllib.parse import unquote, urlsplit

from chainzoom.errors import ChainZoomError, OptionError
from chainzoom.viewer.layers import FILES, TIFF_DZI, describe_run
from chainzoom.viewer.tiles import TiffDeepZoom

HOST = "127.0.0.1"
#: The names a browser on this machine gives :data:`HOST` in the ``Host`` header.
HOST_NAMES = (HOST, "localhost")
MAX_PORT = 65535
STATIC = Path(__file__).resolve().parent / "static"
_TIFF_TILE = re.compile(r"^(?P<name>[\w.-]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.jpe?g$")
_TIFF_DZI = re.compile(r"^(?P<name>[\w.-]+)\.dzi$")
#: C0 controls and DEL as ``\\xNN`` in log lines, so no request can write a line of its own.
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}


def inside(root: Path, relative: str) -> Path | None:
    """The file ``root / relative`` once links are resolved, or ``None`` if it is outside ``root`` or no file.

    A name the system refuses (too long, say) is no file either: it comes from a URL.
    """
    try:
        path = (root / relative).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None
    except OSError:
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


class ViewerHandler(BaseHTTPRequestHandler):
    """GET-only handler over a :class:`RunViewer`."""

    server_version = "chainzoom-view"
    #: Empty until the connection's first request line is read (the base class sets it per request).
    requestline = ""
    #: Why the reply being sent is an error, for its log line (see :meth:`log_request`).
    _reason: str | None = None

    def __init__(self, *args, viewer: RunViewer, log: TextIO | None, **kwargs) -> None:
        self.viewer = viewer
        self.log = log
        super().__init__(*args, **kwargs)

    def handle(self) -> None:
        """Serve the connection; a client that drops it (an aborted download) is one log line, not a traceback."""
        try:
            super().handle()
        except ConnectionError as exc:  # BrokenPipeError, ConnectionResetError: nobody is left to answer
            after = f' after "{self.requestline}"' if self.requestline else ""
            self.log_message("the client closed the connection%s (%s)", after, exc.strerror or type(exc).__name__)

    def do_GET(self) -> None:
        if self._refuse_host():
            return
        path = unquote(urlsplit(self.path).path)
        if "\0" in path:  # no file has one in its name; pathlib would raise on it
            self.send_error(HTTPStatus.BAD_REQUEST, explain="a NUL byte in the path")
            return
        try:
            if path in ("/", "/index.html"):
                self._send_file(STATIC / "index.html")
            elif path == "/layers.json":
                self._send(json.dumps(self.viewer.layers()).encode(), "application/json")
            elif path.startswith("/static/"):
                self._send_file(inside(STATIC, path[len("/static/") :]))
            elif path.startswith(FILES):
                self._send_file(self.viewer.file(path[len(FILES) :]))
            elif path.startswith(TIFF_DZI):
                self._tiff(path[len(TIFF_DZI) :])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except ChainZoomError as exc:  # what the run does not hold (yet), or holds unreadable
            self.send_error(HTTPStatus.NOT_FOUND, explain=str(exc))

    def _refuse_host(self) -> bool:
        """Answer 403 to a request whose ``Host`` is not this server (DNS rebinding); ``True`` if it did."""
        port = bound_address(self.server)[1]
        allowed = {f"{name}:{port}" for name in HOST_NAMES} | (set(HOST_NAMES) if port == 80 else set())
        hosts = self.headers.get_all("Host") or []
        if len(hosts) == 1 and hosts[0].strip().lower() in allowed:
            return False
        named = ", ".join(hosts) or "(none)"
        self.send_error(HTTPStatus.FORBIDDEN, explain=f"Host {named} is not this server; open http://{HOST}:{port}/")
        return True

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
            self._send_headers(kind or "application/octet-stream", size)
            if size:  # count: a file that grows meanwhile still sends what Content-Length said
                self.connection.sendfile(source, count=size)

    def _send(self, body: bytes, content_type: str) -> None:
        self._send_headers(content_type, len(body))
        self.wfile.write(body)

    def _send_headers(self, content_type: str, length: int) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Keep the reason for the reply's own log line (:meth:`log_request`).

        Here a reason goes in ``explain``, the page's text: the status line takes latin-1 only.
        """
        self._reason = explain or message
        super().send_error(code, message, explain)

    def log_error(self, format: str, *args: Any) -> None:
        """Nothing: the base class logs here from :meth:`send_error`, whose reply's line has the reason."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per reply: the request, its status and size, and for an error why."""
        reason, self._reason = self._reason, None
        status = code.value if isinstance(code, HTTPStatus) else code
        self.log_message('"%s" %s %s%s', self.requestline, status, size, f" ({reason})" if reason else "")

    def log_message(self, format: str, *args: Any) -> None:
        if self.log is not None:
            line = (format % args).translate(_CONTROL)
            self.log.write(f"{self.address_string()} {line}\n")


def make_server(folder: Path, port: int = 0, log: TextIO | None = None) -> ThreadingHTTPServer:
    """A server for ``folder`` bound to 127.0.0.1:``port`` (0: any free port), not yet serving."""
    if not 0 <= port <= MAX_PORT:
        raise OptionError("port", f"must be 0..{MAX_PORT}, got {port}")
    viewer = RunViewer(folder)
    try:
        server = ThreadingHTTPServer((HOST, port), partial(ViewerHandler, viewer=viewer, log=log))
    except OSError as exc:
        raise ChainZoomError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}; try --port 0") from None
    server.daemon_threads = True
    return server


def bound_address(server: BaseServer) -> tuple[str, int]:
    """The server's host and port: bound to an AF_INET address, so the host reads back as a str."""
    host, port = cast(tuple[str, int], server.server_address)[:2]
    return host, port


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = bound_address(server)
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
