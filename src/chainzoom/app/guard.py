"""The app's gate: only requests addressed to it, from its own page, reach Gradio.

A web page on any site can make the browser on this machine send requests to
127.0.0.1: by rebinding its own DNS name to 127.0.0.1 (the request's ``Host`` is then
that name), or directly (its ``Origin`` is then that site). Either way it would drive the
whole API: run zooms, probe which server paths exist through the spandrel argument's
errors, make the server post images to any URL through the openai argument. So every
request (HTTP and websocket) passes :class:`HostGuard` first, outside all of Gradio's own
middleware (its CORS middleware echoes any ``Origin`` when ``Host`` is not a local name):

* its ``Host`` must be on the allow-list (:func:`chainzoom.serving.allowed_hosts`: the
  app's own address and port, the loopback names when it listens on loopback or on every
  address, and the names given with ``--allow-host``), else 403 with one line;
* an ``Origin``, when the browser sends one, must name one of those too, else 403: no
  other site's page gets an answer, so no ``Access-Control-Allow-Origin`` is ever sent to one;
* a path with a NUL byte is 400, and a body over :data:`MAX_BODY` outside the upload route
  is 413 (uploads have Gradio's own ``--max-upload-mb``);
* a body outside the upload route must be JSON (``application/json``, UTF-8, finite numbers,
  nested at most :data:`MAX_DEPTH` deep), else 415 or 400: Gradio answers some of those with
  a 500 (``1e999`` is infinity, which its error reply cannot encode).

Gradio builds its FastAPI app inside ``launch``; :func:`guarded_app` makes that app (Gradio's
``_app`` argument) with the guard around its middleware stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from chainzoom.serving import host_refusal, origin_refusal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest request body outside the upload route (the API's JSON is a few hundred bytes).
MAX_BODY = 1 << 20
#: Deepest nesting of a JSON body (the API's is 3 or 4 deep).
MAX_DEPTH = 64
#: Methods whose body the guard reads and checks.
WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")
#: Where Gradio takes uploads (limited by its own ``max_file_size``).
UPLOAD_ROUTES = ("/gradio_api/upload", "/upload")


class HostGuard:
    """ASGI middleware: refuse, with one line, what is not addressed to this app or comes from another site."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str], port: int, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.allowed = allowed
        self.port = port
        self.max_body = max_body

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The status and reason to refuse this request with, or None to let it through."""
        headers: dict[str, list[str]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        problem = host_refusal(headers.get("host", []), self.allowed, self.port)
        if problem is None and len(headers.get("origin", [])) > 1:
            problem = "a request with two Origin headers is refused"
        if problem is None:
            origins = headers.get("origin")
            problem = origin_refusal(origins[0] if origins else None, self.allowed)
        if problem is not None:
            return 403, problem
        path = scope.get("path", "")
        raw = scope.get("raw_path") or b""
        if "\0" in path or "\0" in unquote(path) or b"\0" in raw or b"%00" in raw:
            return 400, "a NUL byte in the path"
        if scope["type"] == "http" and not path.startswith(UPLOAD_ROUTES):
            for length in headers.get("content-length", []):
                if not length.strip().isdigit():
                    return 400, f"Content-Length {length[:40]!r} is not a number"
                if int(length) > self.max_body:
                    return 413, f"a request body here is at most {self.max_body} bytes"
        return None

    def checks_body(self, scope: Scope) -> bool:
        return scope.get("method") in WITH_BODY and not scope.get("path", "").startswith(UPLOAD_ROUTES)

    async def read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The request's body, up to :attr:`max_body` bytes, and whether there was more."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None and scope["type"] == "http" and self.checks_body(scope):
            body, more = await self.read_body(receive)
            refused = (
                body_refusal(scope, body)
                if not more
                else (413, f"a request body here is at most {self.max_body} bytes")
            )
            if refused is None:
                await self.app(scope, replay(body, receive), send)
                return
        elif refused is None:
            await self.app(scope, receive, send)
            return
        status, reason = refused
        if scope["type"] == "websocket":  # closing before accepting: the server answers 403
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        phrase = {400: "Bad Request", 403: "Forbidden", 413: "Content Too Large", 415: "Unsupported Media Type"}[status]
        body = f"{status} {phrase}: {' '.join(reason.split())}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def body_refusal(scope: Scope, body: bytes) -> tuple[int, str] | None:
    """Why a request body outside the upload route is refused, or None: empty, or JSON Gradio can take."""
    if not body:
        return None
    kind = b""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            kind = value.split(b";")[0].strip().lower()
    if kind != b"application/json":
        return 415, f"a request body here is application/json, not {kind.decode('latin-1')[:60] or 'untyped'}"
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())[:120]
        return 400, f"the body is not JSON ({why})"
    problem = _json_problem(data, 0)
    return None if problem is None else (400, f"the body is not JSON Gradio can take ({problem})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")


def _json_problem(value: Any, depth: int) -> str | None:
    """What in decoded JSON ``value`` is too deep or not finite, or None."""
    if depth > MAX_DEPTH:
        return f"nested over {MAX_DEPTH} deep"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number too large for a double"
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        problem = _json_problem(child, depth + 1)
        if problem:
            return problem
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then what the client sends next (its disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def guarded_app(allowed: frozenset[str], port: int) -> Any:
    """Gradio's FastAPI app (for ``launch(_app=...)``) with :class:`HostGuard` outside all its middleware."""
    from gradio.routes import App, ORJSONResponse

    class GuardedApp(App):
        def build_middleware_stack(self) -> Any:
            return HostGuard(super().build_middleware_stack(), allowed, port)

    return GuardedApp(default_response_class=ORJSONResponse)
