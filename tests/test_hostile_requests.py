"""Every chainzoom server against the same hostile requests: each gets a reply, never a dropped connection.

One table of requests (:data:`CASES`: NUL bytes, traversal, huge numbers, wrong types,
deep JSON, a foreign ``Host`` or ``Origin``, oversized bodies, malformed HTTP) is sent, over
a raw socket, to every server in :data:`TARGETS`. Each must answer with a status line: a
2xx, or a 4xx whose body is one line; never a 5xx, a dropped connection, a traceback (to
the client or on the server's stderr), another site's ``Access-Control-Allow-Origin``, or
a file from outside its folder. A new server joins by adding one line to :data:`TARGETS`
(a starter in :mod:`tests.servers` and the routes that take a file name, a number, a JSON body).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import servers

TIMEOUT = 20
EVIL = "http://evil.example"


@dataclass(frozen=True)
class Target:
    """A server under test: how to start it, and its routes that take a file name, a number and a JSON body."""

    name: str
    start: Callable[[Path], AbstractContextManager[str]]
    files: str  # prefix of a route that names a file
    number: str  # a route with a number in it ("{}")
    post: str  # a route that takes JSON (or refuses POST)
    body: dict[str, Any] = field(default_factory=dict)  # a plausible JSON body for it
    #: Whether the server's stderr is its own to keep free of tracebacks (Gradio's queue prints one for
    #: an API call whose data it refuses, later, in its worker: the client gets one line all the same).
    own_stderr: bool = True


VOTE = {"key": "k" * 16, "rater": "me", "trial": "attention", "ticket": "t", "side": "left", "seconds": 1}
ZOOM = {"data": ["0.5,0.5", 4, "chain", "bicubic", "", "null", "", "anchor"]}
SLOW = pytest.mark.slow  # Gradio takes seconds to start

TARGETS = [
    Target("viewer", servers.viewer, "/files/", "/tiff/level_01_files/{}/0_0.jpg", "/layers.json"),
    Target("study", servers.study, "/images/", "/api/next?rater=r{}", "/api/vote", VOTE),
    pytest.param(
        Target(
            "app", servers.app, "/gradio_api/file=", "/gradio_api/call/zoom/{}", "/gradio_api/call/zoom", ZOOM, False
        ),
        marks=SLOW,
    ),
]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes


def exchange(address: tuple[str, int], head: bytes, body: bytes = b"") -> Reply | None:
    """Send ``head`` (and ``body``, as much as the server takes) on a new connection; its reply, None if dropped."""
    with socket.create_connection(address, timeout=TIMEOUT) as client:
        try:
            client.sendall(head)
            client.sendall(body)
        except (BrokenPipeError, ConnectionResetError):  # it answered without reading it all: read the answer
            pass
        received = b""
        try:
            while chunk := client.recv(1 << 16):
                received += chunk
        except ConnectionResetError:
            pass
    if not received.startswith(b"HTTP/1."):
        return None
    head_part, _, content = received.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Reply(int(lines[0].split()[1]), headers, content)


def request(
    method: str,
    path: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    length: int | None = None,
) -> tuple[bytes, bytes]:
    """A raw HTTP/1.1 request (``Connection: close``) as head and body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or length is not None:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body


def post_json(target: Target, host: str, data: bytes, **headers: str) -> tuple[bytes, bytes]:
    return request("POST", target.post, host, {"Content-Type": "application/json", **headers}, data)


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: name -> (the request for a target and its Host, must it be refused?)
Case = Callable[[Target, str], tuple[bytes, bytes]]
CASES: dict[str, tuple[Case, bool]] = {
    # NUL bytes
    "nul-raw": (lambda t, h: request("GET", t.files + "a\0b.png", h), True),
    "nul-encoded": (lambda t, h: request("GET", t.files + "%00", h), True),
    "nul-in-name": (lambda t, h: request("GET", t.files + "level_01.tif%00.png", h), True),
    # traversal
    "dotdot": (lambda t, h: request("GET", t.files + "../../../../../../etc/passwd", h), True),
    "dotdot-encoded": (lambda t, h: request("GET", t.files + "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", h), True),
    "slash-encoded": (lambda t, h: request("GET", t.files + "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", h), True),
    "double-encoded": (lambda t, h: request("GET", t.files + "%252e%252e%252f%252e%252e%252fetc%252fpasswd", h), True),
    "dots-and-slashes": (lambda t, h: request("GET", t.files + "....//....//....//etc/passwd", h), True),
    "backslashes": (lambda t, h: request("GET", t.files + "..%5c..%5c..%5c..%5cetc%5cpasswd", h), True),
    "overlong-utf8": (lambda t, h: request("GET", t.files + "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", h), True),
    "absolute": (lambda t, h: request("GET", t.files + "/etc/passwd", h), True),
    "hidden-file": (lambda t, h: request("GET", t.files + ".chainzoom.lock", h), True),
    # huge and odd numbers
    "5000-digits": (lambda t, h: request("GET", t.number.format("9" * 5000), h), False),
    "20-digits": (lambda t, h: request("GET", t.number.format("9" * 20), h), False),
    "negative": (lambda t, h: request("GET", t.number.format("-1"), h), False),
    "float-overflow": (lambda t, h: request("GET", t.number.format("1e999"), h), False),
    # wrong types, deep JSON
    **{
        f"{key}-{kind}": (
            lambda t, h, key=key, value=value: post_json(t, h, json.dumps({**t.body, key: value}).encode()),
            False,
        )
        for key in ("key", "rater", "trial", "ticket", "side", "seconds", "data")
        for kind, value in (("null", None), ("list", [1]), ("object", {"a": 1}), ("huge", 1e308), ("bool", True))
    },
    **{
        f"body-{kind}": (lambda t, h, text=text: post_json(t, h, text), False)
        for kind, text in (("list", b"[]"), ("null", b"null"), ("string", b'"x"'), ("number", b"1e999"))
    },
    "not-json": (lambda t, h: post_json(t, h, b"{not json"), False),
    "not-utf8": (lambda t, h: post_json(t, h, b'{"key": "\xff\xfe"}'), False),
    "deep-list": (lambda t, h: post_json(t, h, deep(2000)), False),
    "deep-field": (lambda t, h: post_json(t, h, b'{"trial": ' + deep(1900) + b"}"), False),
    # foreign Host or Origin
    "foreign-host": (lambda t, h: request("GET", "/", "evil.example"), True),
    "foreign-host-port": (lambda t, h: request("GET", "/", "evil.example:" + h.rpartition(":")[2]), True),
    "no-host": (lambda t, h: (b"GET / HTTP/1.0\r\n\r\n", b""), True),
    "two-hosts": (lambda t, h: request("GET", "/", h, {"Host": "evil.example"}), True),
    "foreign-origin-post": (lambda t, h: post_json(t, h, json.dumps(t.body).encode(), Origin=EVIL), True),
    "null-origin-post": (lambda t, h: post_json(t, h, json.dumps(t.body).encode(), Origin="null"), True),
    "foreign-origin-get": (lambda t, h: request("GET", "/", h, {"Origin": EVIL}), False),
    "preflight": (
        lambda t, h: request("OPTIONS", t.post, h, {"Origin": EVIL, "Access-Control-Request-Method": "POST"}),
        True,
    ),
    "form-post": (
        lambda t, h: request("POST", t.post, h, {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
        True,
    ),
    # oversized bodies, lengths that lie
    "body-100k": (lambda t, h: post_json(t, h, b'{"pad": "' + b"x" * 100_000 + b'"}'), False),
    "body-2m": (lambda t, h: post_json(t, h, b'{"pad": "' + b"x" * (2 << 20) + b'"}'), True),
    "claimed-1tb": (lambda t, h: request("POST", t.post, h, {"Content-Type": "application/json"}, length=10**12), True),
    "length-zero": (lambda t, h: request("POST", t.post, h, {"Content-Type": "application/json"}, length=0), False),
    "length-not-a-number": (
        lambda t, h: request("POST", t.post, h, {"Content-Type": "application/json", "Content-Length": "abc"}),
        True,
    ),
    # HTTP itself
    "head": (lambda t, h: request("HEAD", "/", h), False),
    "unknown-method": (lambda t, h: request("BREW", "/", h), True),
    "long-url": (lambda t, h: request("GET", "/" + "a" * 70_000, h), True),
    "long-header": (lambda t, h: request("GET", "/", h, {"X-Long": "a" * 70_000}), False),
    "garbage": (lambda t, h: (b"GARBAGE\r\n\r\n", b""), True),
    "http-2-0": (lambda t, h: (f"GET / HTTP/2.0\r\nHost: {h}\r\nConnection: close\r\n\r\n".encode(), b""), False),
}


@pytest.fixture(scope="module", params=TARGETS, ids=lambda target: target.name)
def served(request, tmp_path_factory):
    target: Target = request.param
    with target.start(tmp_path_factory.mktemp(target.name)) as url:
        yield target, url


@pytest.mark.parametrize("case", list(CASES))
def test_every_hostile_request_gets_a_reply(served, case: str, capfd) -> None:
    target, url = served
    address = urlsplit(url)
    host = address.netloc
    make, refused = CASES[case]
    reply = exchange((address.hostname, address.port), *make(target, host))
    assert reply is not None, f"{target.name} dropped the connection on {case}"
    assert 200 <= reply.status < 300 or 400 <= reply.status < 500, (case, reply.status, reply.body[:300])
    if refused:
        assert 400 <= reply.status < 500, (case, reply.status, reply.body[:300])
    text = reply.body.decode("utf-8", "replace")
    if reply.status >= 400 and case != "head":
        assert text.strip() and "\n" not in text.strip(), (case, text[:500])  # one line
    assert "Traceback" not in text and "root:" not in text and "lock file" not in text, (case, text[:500])
    for allowed in reply.headers.get("access-control-allow-origin", []):
        assert allowed not in (EVIL, "*", "null"), (case, allowed)
    if target.own_stderr:
        assert "Traceback" not in capfd.readouterr().err, case
