"""Prompts from any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, LM Studio).

``openai:http://host:port/v1,model=NAME``. The server is asked exactly what the local
``vlm`` prompter asks (see :mod:`.message`): the official system message, then a user
turn with the previous state and the zoomed view as two base64 PNG data URLs, in that
order, at the view size. Greedy is ``temperature=0``; ``sample=true`` sends
``temperature``/``top_p`` and a per-step ``seed`` (honoured by vLLM, llama.cpp and
OpenAI; other servers may ignore it, so sampled prompts there do not repeat).

Only the standard library talks HTTP: no new dependency. The API key is read from an
environment variable (``OPENAI_API_KEY``, or the one named by ``key_env=``) at each
request and sent as a bearer token; none is sent when the variable is unset, which is
what local servers expect. A ``user:password@`` in the URL is sent as HTTP Basic
credentials instead (the URL names that server, the variable may be set for another).
No credential reaches :meth:`settings` (hence manifest.json or the prompt cache) or a
message: the key never, the URL only through :func:`chainzoom.secrets.redact_url`.

Each request is bounded: ``timeout`` seconds for all of it (connecting, sending,
waiting, reading; a server that trickles its answer cannot stretch it), and an answer
of at most :func:`reply_limit` bytes, from ``max_tokens``. Failures: connection errors,
time-outs, an answer cut off mid-body, too long or empty, 429 and 5xx answers are
retried ``retries`` times with exponential back-off (``backoff``, ``2*backoff``, …);
any other 4xx, a reply that is not JSON, or JSON without ``choices[0].message.content``
stops at once. Each ends in a one-line :class:`ChainZoomError`; the run keeps what it
wrote and resumes when started again, reusing the prompts already cached.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from chainzoom.errors import ChainZoomError, one_line
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.message import (
    MULTISCALE_SYSTEM_MESSAGE,
    OFFICIAL_MAX_NEW_TOKENS,
    context_images,
    join_user_text,
    step_seed,
)
from chainzoom.prompts.options import Options
from chainzoom.runtime import Runtime
from chainzoom.secrets import MASK, redact_url

DEFAULT_KEY_ENV = "OPENAI_API_KEY"

#: Characters one token may decode to, generously: English tokens average about 4, the
#: longest in common vocabularies (runs of spaces or dashes) a few dozen.
MAX_CHARS_PER_TOKEN = 32
#: Bytes one character may take in a JSON answer: a character outside the BMP escaped
#: as a ``\uXXXX\uXXXX`` surrogate pair.
MAX_JSON_BYTES_PER_CHAR = 12
#: Room for everything around the text (id, model, usage, finish reason, a server's extras).
REPLY_OVERHEAD_BYTES = 64 * 1024
#: The longest ``timeout`` or ``backoff`` taken: a day is already no bound in practice, and
#: a socket refuses much longer ones (or ``inf``) with an OverflowError.
MAX_TIMEOUT_S = 86400.0
#: How much of a server's error body is read for its message (one shortened line is shown).
ERROR_DETAIL_BYTES = 4096


def reply_limit(max_tokens: int) -> int:
    """The most bytes an honest answer of ``max_tokens`` tokens can take; a longer one is refused.

    Every token at its longest (:data:`MAX_CHARS_PER_TOKEN`), every character at its
    most expensive in JSON (:data:`MAX_JSON_BYTES_PER_CHAR`), plus
    :data:`REPLY_OVERHEAD_BYTES`: 76 KiB for the official 32 tokens, so a server that
    ignores ``max_tokens`` cannot fill memory, a manifest or the prompt cache.
    """
    return max_tokens * MAX_CHARS_PER_TOKEN * MAX_JSON_BYTES_PER_CHAR + REPLY_OVERHEAD_BYTES


def prompt_limit(max_tokens: int) -> int:
    """The most characters of answer kept as a prompt: what ``max_tokens`` tokens can spell."""
    return max_tokens * MAX_CHARS_PER_TOKEN


class _Retryable(Exception):
    """A failure worth another try (the server may be starting, busy or restarting)."""


class OpenAIPrompter(Prompter):
    """Asks an OpenAI-compatible server about [previous state, zoomed view]."""

    id = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        *,
        max_tokens: int = OFFICIAL_MAX_NEW_TOKENS,
        sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        text: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        key_env: str = DEFAULT_KEY_ENV,
    ) -> None:
        self.endpoint, self._userinfo = split_userinfo(completions_url(url))
        self.model = model
        self.max_tokens = max_tokens
        self.sample = sample
        self.temperature, self.top_p = temperature, top_p
        self.seed = seed
        self.text = text
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.key_env = key_env

    def settings(self) -> dict:
        decoding: dict[str, Any] = {"mode": "greedy"}
        if self.sample:
            decoding = {"mode": "sample", "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {
            "id": self.id,
            "url": redact_url(self.endpoint),
            "model": self.model,
            "message": MULTISCALE_SYSTEM_MESSAGE,
            "max_tokens": self.max_tokens,
            "decoding": decoding,
            "text": self.text,
        }

    def request_body(self, context: PromptContext) -> dict:
        """The chat-completions request: system message, then the two images in paper order."""
        images = [{"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in context_images(context)]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": MULTISCALE_SYSTEM_MESSAGE},
                {"role": "user", "content": images},
            ],
            "max_tokens": self.max_tokens,
            "stream": False,
        }
        if self.sample:
            body.update(temperature=self.temperature, top_p=self.top_p, seed=step_seed(self.seed, context.step))
        else:
            body["temperature"] = 0.0
        return body

    def describe(self, context: PromptContext) -> str:
        reply = self._post(self.request_body(context))
        generated = answer_text(reply, self._where()).strip()[: prompt_limit(self.max_tokens)].rstrip()
        return join_user_text(generated, self.text)

    def _where(self) -> str:
        return f"openai {redact_url(self.endpoint)}"

    def _post(self, body: dict) -> Any:
        """The decoded reply, whose answer is not empty, after as many tries as allowed."""
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        authorization, secret = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        limit = reply_limit(int(body.get("max_tokens", self.max_tokens)))
        tries = self.retries + 1
        for attempt in range(tries):
            try:
                request = urllib.request.Request(self.endpoint, data, headers, method="POST")
                reply = self._exchange(request, limit, [secret] if secret else [])
                if not answer_text(reply, self._where()).strip():
                    raise _Retryable("empty answer")
                return reply
            except _Retryable as problem:
                if attempt + 1 == tries:
                    raise ChainZoomError(
                        f"{self._where()}: no usable answer after {tries} tries ({problem}); "
                        "start or fix the server and run again to resume"
                    ) from None
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _authorization(self) -> tuple[str | None, str | None]:
        """The ``Authorization`` header to send, and the secret in it (never to be quoted)."""
        if self._userinfo is not None:
            pair = ":".join(self._userinfo)
            return f"Basic {base64.b64encode(pair.encode('utf-8')).decode('ascii')}", self._userinfo[1] or None
        key = os.environ.get(self.key_env)
        return (f"Bearer {key}", key) if key else (None, None)

    def _exchange(self, request: urllib.request.Request, limit: int, secrets: list[str]) -> Any:
        """One request within :attr:`timeout` in all: the decoded JSON reply, :class:`_Retryable`,
        or a final ChainZoomError."""
        deadline = time.monotonic() + self.timeout
        opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                content_type = response.headers.get_content_type()
                payload = _read_capped(response, limit)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc, secrets)
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}{detail}") from None
            hint = ""
            if exc.code in (401, 403):
                hint = (
                    "; are the URL's user name and password right?"
                    if self._userinfo
                    else f"; is {self.key_env} set to a valid key?"
                )
            raise ChainZoomError(f"{self._where()}: HTTP {exc.code}{detail}{hint}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retryable(_transport_problem(exc)) from None
        if content_type != "application/json":
            raise ChainZoomError(f"{self._where()}: answered {content_type}, not application/json (not a chat API?)")
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ChainZoomError(f"{self._where()}: the answer is not valid JSON ({exc})") from None


def _read_capped(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body, or :class:`_Retryable` when it is longer than ``limit`` bytes.

    A declared length is checked before anything is read and then read exactly (a body
    cut short raises ``IncompleteRead``); an undeclared one is read to ``limit + 1``.
    """
    if response.length is not None:
        if response.length > limit:
            raise _Retryable(f"an answer of {response.length} bytes, over the {limit} that max_tokens allows")
        return response.read()
    payload = response.read(limit + 1)
    if len(payload) > limit:
        raise _Retryable(f"an answer over the {limit} bytes that max_tokens allows")
    return payload


def _transport_problem(exc: Exception) -> str:
    """A transport failure as a short reason (never the URL, which may hold credentials)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, http.client.IncompleteRead):
        return f"the connection closed mid-answer after {len(reason.partial)} bytes"
    if isinstance(reason, http.client.HTTPException):
        return f"{type(reason).__name__}: {one_line(reason)}"[:200]
    return one_line(reason) if isinstance(reason, BaseException) else str(reason)


def _time_left(deadline: float) -> float:
    """Seconds until ``deadline``; a :class:`TimeoutError` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class _DeadlineReader(io.RawIOBase):
    """A response's socket reads, each waiting at most for the time left before the deadline.

    A socket time-out bounds one read; a server sending a byte a second never trips it.
    Re-arming it with what is left before every read bounds them all together.
    """

    def __init__(self, sock: socket.socket, raw: io.RawIOBase, deadline: float) -> None:
        self._sock, self._raw, self._deadline = sock, raw, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_time_left(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body all share one deadline."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        # Nothing is read yet, so the socket file can be detached and wrapped losslessly.
        self.fp = io.BufferedReader(_DeadlineReader(sock, self.fp.detach(), deadline))


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose connecting, sending and reading share one deadline."""

    def __init__(self, host: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.deadline = deadline
        # http.client makes its response as response_class(sock, method=...): a partial
        # hands the deadline on.
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        self.timeout = _time_left(self.deadline)
        super().connect()

    def send(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(_time_left(self.deadline))
        super().send(data)


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    """The same over TLS (the handshake is bounded by the time left when connecting)."""


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    """urllib's HTTP handler (proxies, errors as today) with :class:`_DeadlineConnection`."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineConnection, deadline=self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's HTTPS handler (default certificate checks) with :class:`_DeadlineHTTPSConnection`."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPSConnection, deadline=self.deadline), req)


def answer_text(reply: Any, where: str) -> str:
    """``choices[0].message.content`` as text (a string, or a list of text parts)."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChainZoomError(f"{where}: the answer has no choices[0].message.content") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ChainZoomError(f"{where}: choices[0].message.content is {type(content).__name__}, not text")
    return content


def png_data_url(image) -> str:
    """A PIL image as a ``data:image/png;base64,…`` URL (lossless, as the official PNG files)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def completions_url(url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/v1/chat/completions`` (a full URL stays).

    Checked here, once, so that http.client never refuses it later with a message that
    would quote it, credentials and all.
    """
    url = url.strip()
    parts = urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid or any(ord(char) <= 32 or ord(char) == 127 for char in url):
        hint = " (percent-encode any of :/?#@ in a user name or password)" if "@" in url else ""
        raise ChainZoomError(
            f"openai: expected an http(s) URL such as http://localhost:8000/v1, got {redact_url(url)!r}{hint}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:pw@host/...`` -> (``http://host/...``, (user, password)), decoded; or (url, None).

    urllib would take ``user:pw@host`` for the host name; the pair belongs in an HTTP
    Basic ``Authorization`` header instead.
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username), unquote(parts.password or ""))


def _error_detail(exc: urllib.error.HTTPError, secrets: list[str]) -> str:
    """The server's own error message, if it sent one, shortened to one line, ``secrets`` masked."""
    try:
        body = exc.read(ERROR_DETAIL_BYTES).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body
    message = str(message)
    for secret in secrets:
        message = message.replace(secret, MASK)
    message = " ".join(message.split())[:200]
    return f": {message}" if message else ""


def create_openai(argument: str | None, runtime: Runtime, **options: Any) -> OpenAIPrompter:
    """``openai:URL,model=NAME[,max_tokens=N,sample=BOOL,temperature=T,top_p=P,text=T,
    timeout=S,retries=N,backoff=S,key_env=VAR]``."""
    url, opts = Options.parse("openai", argument, options)
    model = opts.text("model")
    settings: dict[str, Any] = dict(
        **opts.decoding(runtime.seed, temperature_minimum=0.0),
        timeout=opts.number("timeout", 60.0, minimum=0.001),
        retries=opts.integer("retries", 3, minimum=0),
        backoff=opts.number("backoff", 1.0, minimum=0.0),
        key_env=opts.text("key_env", DEFAULT_KEY_ENV),
    )
    opts.finish()
    for name, most in (("timeout", MAX_TIMEOUT_S), ("backoff", MAX_TIMEOUT_S)):
        if not settings[name] <= most:  # also refuses nan
            raise ChainZoomError(f"openai: {name} must be at most {most:g} seconds, got {settings[name]}")
    if not url:
        raise ChainZoomError("openai: name the server, e.g. openai:http://localhost:8000/v1")
    if not model:
        raise ChainZoomError("openai: name the served model with model=NAME (--prompter-model NAME)")
    return OpenAIPrompter(url, model, **settings)
