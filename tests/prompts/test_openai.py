"""The ``openai`` prompter against an in-test chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

import pytest
import torch
from PIL import Image

from chainzoom.errors import ChainZoomError
from chainzoom.io.images import to_pil
from chainzoom.prompts import create_prompter
from chainzoom.prompts.base import PromptContext
from chainzoom.prompts.message import MULTISCALE_SYSTEM_MESSAGE
from chainzoom.prompts.openai import prompt_limit, reply_limit
from chainzoom.runtime import Runtime

#: What the handler answers: (status, content type, body bytes, seconds to wait first), or
#: a function that writes the raw response itself (status line included) to the socket.
Reply = tuple[int, str, bytes, float] | Callable[[BinaryIO], None]


def chat_reply(content: str) -> Reply:
    message = {"role": "assistant", "content": content}
    body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
    return 200, "application/json", json.dumps(body).encode(), 0.0


class ChatServer:
    """Answers POST /v1/chat/completions from a script of replies; records every request."""

    def __init__(self, script: Callable[[int], Reply]) -> None:
        self.script = script
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(self.rfile.read(length))}
                )
                reply = server.script(len(server.requests))
                if callable(reply):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                        reply(self.wfile)
                    self.close_connection = True
                    return
                status, content_type, body, delay = reply
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out test)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int], Reply]], ChatServer]]:
    servers: list[ChatServer] = []

    def start(script: Callable[[int], Reply]) -> ChatServer:
        servers.append(ChatServer(script).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def make_context(step: int = 1) -> PromptContext:
    generator = torch.Generator().manual_seed(step)
    wide = torch.rand(3, 48, 64, generator=generator) * 0.5
    return PromptContext(step, wide, 0.5 + torch.rand(3, 48, 64, generator=generator) * 0.5)


def prompter(server: ChatServer, **options):
    options = {"model": "qwen2.5-vl", "retries": 2, "backoff": 0.01, "timeout": 5, **options}
    return create_prompter(f"openai:{server.url}", Runtime(device="cpu", seed=5), **options)


def decode_image(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def test_happy_path_sends_both_images_in_order_and_the_key(serve, monkeypatch):
    monkeypatch.setenv("CZ_TEST_KEY", "sk-secret-123")
    server = serve(lambda n: chat_reply(" tabby cat, fur, whiskers\n"))
    chosen = prompter(server, key_env="CZ_TEST_KEY", text="sharp")
    context = make_context()
    assert chosen.describe(context) == "tabby cat, fur, whiskers, sharp,"

    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-secret-123"
    body = request["body"]
    assert body["model"] == "qwen2.5-vl" and body["max_tokens"] == 32 and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system == {"role": "system", "content": MULTISCALE_SYSTEM_MESSAGE}
    assert user["role"] == "user" and [part["type"] for part in user["content"]] == ["image_url", "image_url"]
    first, second = (decode_image(part["image_url"]["url"]) for part in user["content"])
    assert first.size == second.size == (64, 48)
    assert first.tobytes() == to_pil(context.wide).tobytes()
    assert second.tobytes() == to_pil(context.view).tobytes()
    assert "sk-secret-123" not in json.dumps(chosen.settings())


def test_no_key_variable_sends_no_authorization(serve, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve(lambda n: chat_reply("grass"))
    assert prompter(server).describe(make_context()) == "grass"
    assert "Authorization" not in server.requests[0]["headers"]


def test_sampling_sends_a_seed_per_step(serve):
    server = serve(lambda n: chat_reply("sky"))
    chosen = prompter(server, sample=True, temperature=0.7)
    chosen.describe(make_context(1))
    chosen.describe(make_context(2))
    first, second = (r["body"] for r in server.requests)
    assert first["temperature"] == 0.7 and first["top_p"] == 1.0
    assert isinstance(first["seed"], int) and first["seed"] != second["seed"]


def test_slow_answer_times_out(serve):
    server = serve(lambda n: (*chat_reply("late")[:3], 6.0))
    started = time.perf_counter()
    with pytest.raises(ChainZoomError, match="after 1 tries \\(timed out\\)"):
        prompter(server, timeout=0.3, retries=0).describe(make_context())
    assert time.perf_counter() - started < 3.0  # the answer comes after 6 s; slack for a loaded machine


def test_server_errors_are_retried_then_reported(serve):
    server = serve(lambda n: (500, "application/json", b'{"error": {"message": "model is loading"}}', 0.0))
    with pytest.raises(ChainZoomError, match="after 3 tries \\(HTTP 500: model is loading\\).*resume"):
        prompter(server).describe(make_context())
    assert len(server.requests) == 3


def test_a_passing_server_error_is_survived(serve):
    server = serve(lambda n: (503, "text/plain", b"busy", 0.0) if n == 1 else chat_reply("brick wall"))
    assert prompter(server).describe(make_context()) == "brick wall"
    assert len(server.requests) == 2


def test_client_errors_stop_at_once(serve):
    server = serve(lambda n: (401, "application/json", b'{"error": {"message": "bad key"}}', 0.0))
    with pytest.raises(ChainZoomError, match="HTTP 401: bad key; is OPENAI_API_KEY set"):
        prompter(server).describe(make_context())
    assert len(server.requests) == 1


def test_malformed_json(serve):
    server = serve(lambda n: (200, "application/json", b'{"choices": [', 0.0))
    with pytest.raises(ChainZoomError, match="not valid JSON"):
        prompter(server).describe(make_context())


def test_json_without_an_answer(serve):
    server = serve(lambda n: (200, "application/json", b'{"object": "list", "data": []}', 0.0))
    with pytest.raises(ChainZoomError, match="no choices"):
        prompter(server).describe(make_context())


def test_wrong_content_type(serve):
    server = serve(lambda n: (200, "text/html", b"<html>welcome</html>", 0.0))
    with pytest.raises(ChainZoomError, match="answered text/html, not application/json"):
        prompter(server).describe(make_context())


def test_nobody_listening():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    chosen = create_prompter(f"openai:http://127.0.0.1:{port}/v1,model=m,retries=1,backoff=0.01", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="after 2 tries .*refused"):
        chosen.describe(make_context())


def test_settings_keep_secrets_out_and_spec_errors_are_clear():
    chosen = create_prompter("openai:https://user:pw@api.example.com:8443/v1?key=abc,model=gpt", Runtime(device="cpu"))
    settings = chosen.settings()
    assert settings["url"] == "https://api.example.com:8443/v1/chat/completions?key=***"
    assert "pw" not in json.dumps(settings) and "abc" not in json.dumps(settings)
    with pytest.raises(ChainZoomError, match="model=NAME"):
        create_prompter("openai:http://localhost:8000/v1", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="http\\(s\\) URL"):
        create_prompter("openai:localhost:8000,model=m", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="unknown option"):
        create_prompter("openai:http://localhost:8000/v1,model=m,api_key=sk", Runtime(device="cpu"))


def raw(*parts: bytes, pause: float = 0.0) -> Callable[[BinaryIO], None]:
    """A raw reply: ``parts`` written in turn, ``pause`` seconds apart, then the socket closes."""

    def write(stream: BinaryIO) -> None:
        for part in parts:
            stream.write(part)
            stream.flush()
            time.sleep(pause)

    return write


def head(content_type: str = "application/json", length: int | None = None) -> bytes:
    declared = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\n{declared}\r\n".encode()


def test_an_answer_cut_off_mid_body_is_retried(serve):
    body = chat_reply("tree bark")[2]
    cut = raw(head(length=len(body)) + body[:10])  # Content-Length not met: IncompleteRead
    server = serve(lambda n: cut if n == 1 else chat_reply("tree bark"))
    assert prompter(server).describe(make_context()) == "tree bark"
    assert len(server.requests) == 2

    server = serve(lambda n: cut)
    with pytest.raises(ChainZoomError, match="after 2 tries \\(the connection closed mid-answer after 10 bytes\\)"):
        prompter(server, retries=1).describe(make_context())
    assert len(server.requests) == 2


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_is_bounded_by_the_timeout_in_all(serve, where):
    body = chat_reply("late")[2]
    message = head(length=len(body)) + body
    start = len(head(length=len(body))) if where == "body" else 0
    # One byte every 0.1 s, each well inside the 0.5 s time-out; 80 bytes at most (8 s).
    parts = [message[:start], *(message[i : i + 1] for i in range(start, min(len(message), start + 80)))]
    server = serve(lambda n: raw(*parts, pause=0.1))
    started = time.perf_counter()
    with pytest.raises(ChainZoomError, match="after 2 tries \\(timed out\\)"):
        prompter(server, timeout=0.5, retries=1).describe(make_context())
    assert time.perf_counter() - started < 4.0  # two tries of 0.5 s, a 0.01 s back-off; 16 s without the bound
    assert len(server.requests) == 2


def test_an_answer_longer_than_max_tokens_allows_is_refused(serve):
    huge = chat_reply("word " * 200_000)  # 1 MB: a server ignoring max_tokens
    server = serve(lambda n: huge)
    with pytest.raises(ChainZoomError, match=f"after 2 tries \\(an answer of {len(huge[2])} bytes, over the"):
        prompter(server, retries=1).describe(make_context())
    assert len(server.requests) == 2

    undeclared = raw(head(), huge[2])  # no Content-Length: read to the limit, no further
    server = serve(lambda n: undeclared)
    with pytest.raises(ChainZoomError, match=f"over the {reply_limit(32)} bytes that max_tokens allows"):
        prompter(server, retries=0).describe(make_context())


def test_a_long_answer_within_the_byte_limit_is_cut_to_max_tokens_worth(serve):
    server = serve(lambda n: chat_reply("moss " * 200))
    prompt = prompter(server, max_tokens=4).describe(make_context())
    assert prompt == ("moss " * 200)[: prompt_limit(4)].strip()
    assert server.requests[0]["body"]["max_tokens"] == 4


def test_an_empty_answer_is_a_failed_try(serve):
    server = serve(lambda n: chat_reply(" \n ") if n == 1 else chat_reply("sky"))
    assert prompter(server).describe(make_context()) == "sky"
    assert len(server.requests) == 2

    server = serve(lambda n: chat_reply(""))
    with pytest.raises(ChainZoomError, match="after 2 tries \\(empty answer\\)"):
        prompter(server, retries=1, text="sharp").describe(make_context())
    assert len(server.requests) == 2


def test_url_credentials_are_sent_but_never_shown(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-elsewhere")
    server = serve(lambda n: chat_reply("gravel"))
    host = server.url.removeprefix("http://")
    spec = f"openai:http://alice:s3cr%40t@{host}?token=T0KEN&api-version=2,model=m,retries=0"
    chosen = create_prompter(spec, Runtime(device="cpu"))
    assert chosen.describe(make_context()) == "gravel"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions?token=T0KEN&api-version=2"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    settings = json.dumps(chosen.settings())
    assert "/v1/chat/completions?token=***&api-version=2" in settings
    for secret in ("alice", "s3cr", "T0KEN", "sk-elsewhere"):
        assert secret not in settings

    echo = serve(lambda n: (401, "application/json", b'{"error": {"message": "bad password s3cr@t"}}', 0.0))
    spec = f"openai:http://alice:s3cr%40t@{echo.url.removeprefix('http://')}?token=T0KEN,model=m"
    with pytest.raises(ChainZoomError) as failure:
        create_prompter(spec, Runtime(device="cpu")).describe(make_context())
    assert "HTTP 401: bad password ***; are the URL's user name and password right?" in str(failure.value)
    assert "?token=***" in str(failure.value)
    for secret in ("alice", "s3cr", "T0KEN"):
        assert secret not in str(failure.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:pa/SECRET@127.0.0.1/v1",  # a raw "/" in the password: not a valid URL
        "http://alice:pa#SECRET@127.0.0.1/v1",
        "http://127.0.0.1:8000/v1?token=SECRET word",  # a blank: http.client would quote the URL
        "alice:SECRET@127.0.0.1:8000/v1",  # no scheme
    ],
)
def test_a_malformed_url_is_refused_without_quoting_its_credentials(url):
    with pytest.raises(ChainZoomError, match="expected an http\\(s\\) URL .*\\*\\*\\*") as failure:
        create_prompter(f"openai:{url},model=m", Runtime(device="cpu"))
    assert "SECRET" not in str(failure.value) and "alice" not in str(failure.value)


@pytest.mark.parametrize("option", ["timeout=inf", "timeout=nan", "timeout=1e300", "backoff=inf", "backoff=nan"])
def test_an_unbounded_timeout_or_backoff_is_refused(option):
    with pytest.raises(ChainZoomError, match="must be at most 86400 seconds"):
        create_prompter(f"openai:http://localhost:8000/v1,model=m,{option}", Runtime(device="cpu"))
