"""What chainzoom's standard-library HTTP servers (the viewer, the study) share.

Every request gets a reply: a 2xx, or a 4xx whose body is one line (a method the
server does not answer is 405, not 501; a request the handler fails on is a 500 with
one line, and one line in the log, never a traceback). ``HEAD`` is answered as ``GET``
without the body. A request whose ``Host`` is not the server (DNS rebinding) is 403.
Connections that stay silent are dropped after :data:`SOCKET_TIMEOUT` seconds, so an
idle or half-sent request does not hold a thread forever, and the listen queue takes
:data:`LISTEN_QUEUE` connections (the standard library's 5 resets a crowd).

The Gradio app has its own guard over the same allow-list (:mod:`chainzoom.app.guard`).
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

from chainzoom.errors import ChainZoomError, OptionError

HOST = "127.0.0.1"
#: The names a browser on this machine gives :data:`HOST` in the ``Host`` header.
HOST_NAMES = (HOST, "localhost")
MAX_PORT = 65535
#: Connections the kernel queues before the server accepts them (the standard library's is 5).
LISTEN_QUEUE = 128
#: Seconds a connection may stay silent (mid-request or between requests) before it is dropped.
SOCKET_TIMEOUT = 30.0
#: C0 controls and DEL as ``\\xNN`` in log lines, so no request can write a line of its own.
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
#: A refused body up to this size is read and dropped (for at most DRAIN_SECONDS) before the reply,
#: so a client still sending gets the reply rather than a reset; a larger one is not read at all.
DRAIN_LIMIT = 4 << 20
DRAIN_SECONDS = 2.0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def host_with_port(name: str, port: int) -> str:
    """``name`` as a ``Host`` header names it on ``port`` (IPv6 in brackets), lower case."""
    name = name.strip().lower()
    if name.startswith("["):
        return name if "]:" in name else f"{name}:{port}"
    if name.count(":") > 1:  # a bare IPv6 address
        return f"[{name}]:{port}"
    return name if ":" in name else f"{name}:{port}"


def allowed_hosts(bound: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` values a server bound to ``bound:port`` answers, each as ``name:port``.

    Its loopback names (:data:`HOST_NAMES`) when it listens on loopback or every address, the
    bound address itself otherwise, and the ``extra`` names the user allowed (``NAME`` or
    ``NAME:PORT``). On port 80 a browser leaves the port out, so the bare names count too.
    """
    names = set(HOST_NAMES) if is_loopback(bound) or is_wildcard(bound) else set()
    if not is_wildcard(bound):
        names.add(bound)
    allowed = {host_with_port(name, port) for name in names} | {host_with_port(name, port) for name in extra}
    if port == 80:
        allowed |= {a.rsplit(":", 1)[0] for a in allowed if a.endswith(":80")}
    return frozenset(allowed)


def host_refusal(hosts: list[str], allowed: frozenset[str], port: int) -> str | None:
    """Why a request with these ``Host`` headers is refused (one line), or None: exactly one, allowed."""
    if len(hosts) == 1 and hosts[0].strip().lower() in allowed:
        return None
    named = ", ".join(hosts) or "(none)"
    return f"Host {named} is not this server; open http://{HOST}:{port}/"


def origin_refusal(origin: str | None, allowed: frozenset[str]) -> str | None:
    """Why a request from ``origin`` (its ``Origin`` header) is refused, or None: none sent, or this server."""
    if origin is None:
        return None
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    if port is not None and parts.scheme in ("http", "https") and parts.hostname:
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if f"{name}:{port}" in allowed:
            return None
    return f"a request from {one_line(origin)[:200]} (another site) is refused"


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) as single spaces."""
    return " ".join(str(text).split())


class Handler(BaseHTTPRequestHandler):
    """The shared handler: one-line errors and log lines, ``HEAD``, the ``Host`` check, no traceback."""

    timeout = SOCKET_TIMEOUT
    #: What a request line without a version is answered as: with a status line (HTTP/0.9 has none).
    default_request_version = "HTTP/1.0"
    #: Empty until the connection's first request line is read (the base class sets it per request).
    requestline = ""
    #: The methods the server answers, named by a 405.
    methods: tuple[str, ...] = ("GET", "HEAD")
    #: Why the reply being sent is an error, for its log line (see :meth:`log_request`).
    _reason: str | None = None
    #: Whether the status line of the current reply has been sent.
    _started = False

    def __init__(self, *args: Any, log: TextIO | None = None, **kwargs: Any) -> None:
        self.log = log
        super().__init__(*args, **kwargs)

    # --- one reply per request, whatever happens -------------------------------------------

    def handle(self) -> None:
        """Serve the connection; a client that drops it (an aborted download) is one log line, not a traceback."""
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as exc:  # nobody is left to answer, or nobody spoke
            after = f' after "{self.requestline}"' if self.requestline else ""
            self.log_message("the client closed the connection%s (%s)", after, exc.strerror or type(exc).__name__)

    def handle_one_request(self) -> None:
        self._started = False
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # a bug, or a request nothing foresaw: a 500 of one line, not a dropped connection
            self.close_connection = True
            problem = one_line(f"{type(exc).__name__}: {exc}")[:300]
            if self._started:
                self.log_message('"%s" failed mid-reply (%s)', self.requestline, problem)
            else:
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, explain=f"internal error ({problem})")

    def do_HEAD(self) -> None:
        """``GET`` without the body (:meth:`send_body` sends none to ``HEAD``)."""
        self.do_GET()

    def do_GET(self) -> None:
        self.send_error(HTTPStatus.NOT_FOUND)

    # --- the Host check --------------------------------------------------------------------

    def foreign_host(self) -> str | None:
        """Why this request's ``Host`` is not this server (DNS rebinding), or None."""
        allowed = getattr(self.server, "allowed_hosts", None)
        if allowed is None:
            return None
        return host_refusal(self.headers.get_all("Host") or [], allowed, bound_address(self.server)[1])

    def foreign_origin(self) -> str | None:
        """Why this request counts as sent by another site's page (its ``Origin``), or None.

        Same-origin means an ``Origin`` among the names the ``Host`` check takes, or, where that
        check is off (a server bound to a non-loopback address), the request's own ``Host``.
        """
        allowed = getattr(self.server, "allowed_hosts", None)
        if allowed is None:
            port = bound_address(self.server)[1]
            allowed = frozenset(host_with_port(h, port) for h in self.headers.get_all("Host") or [])
        return origin_refusal(self.headers.get("Origin"), allowed)

    def refuse_foreign_host(self) -> bool:
        """Answer 403 to a request whose ``Host`` is not this server; ``True`` if it did."""
        problem = self.foreign_host()
        if problem is not None:
            self.send_error(HTTPStatus.FORBIDDEN, explain=problem)
        return problem is not None

    # --- replies ---------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self._started = True
        super().send_response(code, message)

    def send_reply(self, body: bytes, content_type: str, status: int = HTTPStatus.OK, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.send_body(body)

    def send_body(self, body: bytes) -> None:
        if self.command != "HEAD":
            self.wfile.write(body)

    def error_body(self, code: int, text: str) -> tuple[bytes, str]:
        """The body of an error reply and its type: one line of text (the study answers JSON)."""
        return f"{code} {HTTPStatus(code).phrase}: {text}\n".encode(), "text/plain; charset=utf-8"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """An error reply whose body is one line, its reason kept for the reply's log line.

        What the base class would answer 501 (a method not served) is 405, and 505 (an HTTP
        version it does not speak) 400: those are the client's doing.
        """
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, explain = HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not answered here"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code = HTTPStatus.BAD_REQUEST
        text = one_line(explain or message or HTTPStatus(code).description)
        self._reason = text
        body, content_type = self.error_body(code, text)
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ", ".join(self.methods))
        self.end_headers()
        self.send_body(body)

    def drain(self, length: int) -> None:
        """Read and drop a refused body of ``length`` bytes, so that a client still sending reads the reply.

        Only up to :data:`DRAIN_LIMIT` bytes, and for at most :data:`DRAIN_SECONDS` in all: a larger
        body, or a client that sends less than it said, is not waited for.
        """
        if not 0 < length <= DRAIN_LIMIT:
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            left = length
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:  # TimeoutError included: the reply goes out regardless
            pass
        finally:
            self.connection.settimeout(self.timeout)

    # --- log lines -------------------------------------------------------------------------

    def log_error(self, format: str, *args: Any) -> None:
        self.log_message(format, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per reply: the request, its status and size, and for an error why."""
        reason, self._reason = self._reason, None
        status = code.value if isinstance(code, HTTPStatus) else code
        self.log_message('"%s" %s %s%s', self.requestline, status, size, f" ({reason})" if reason else "")

    def log_message(self, format: str, *args: Any) -> None:
        if self.log is not None:
            line = (format % args).translate(_CONTROL)
            self.log.write(f"{self.address_string()} {line}\n")


class Server(ThreadingHTTPServer):
    """A threaded server with a deep listen queue; :attr:`allowed_hosts` None: no ``Host`` check."""

    daemon_threads = True
    request_queue_size = LISTEN_QUEUE
    allowed_hosts: frozenset[str] | None = None
    log: TextIO | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What the handler let through (it should let nothing): one log line, no traceback on stderr."""
        exc = sys.exc_info()[1]
        if self.log is not None:
            self.log.write(f"{client_address[0]} the connection failed ({type(exc).__name__}: {one_line(str(exc))})\n")


def make_server(
    host: str,
    port: int,
    handler: Any,
    log: TextIO | None = None,
    check_host: bool = True,
    extra_hosts: Iterable[str] = (),
) -> Server:
    """A :class:`Server` for ``handler`` on ``host:port`` (0: any free port), not yet serving.

    With ``check_host`` only requests whose ``Host`` is the server (or an ``extra_hosts`` name) are answered.
    """
    check_port(port)
    try:
        server = Server((host, port), handler)
    except OSError as exc:
        raise ChainZoomError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; try --port 0") from None
    server.log = log
    if check_host:
        server.allowed_hosts = allowed_hosts(host, bound_address(server)[1], extra_hosts)
    return server


def check_port(port: int) -> None:
    if not 0 <= port <= MAX_PORT:
        raise OptionError("port", f"must be 0..{MAX_PORT}, got {port}")


def bound_address(server: BaseServer) -> tuple[str, int]:
    """The server's host and port: bound to an AF_INET address, so the host reads back as a str."""
    host, port = cast(tuple[str, int], server.server_address)[:2]
    return host, port


def url_of(server: BaseServer) -> str:
    host, port = bound_address(server)
    return f"http://{host}:{port}/"
