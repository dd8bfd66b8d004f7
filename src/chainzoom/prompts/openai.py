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
what local servers expect. The key never appears in :meth:`settings` (hence never in
manifest.json or the prompt cache), and neither do user names, passwords or query
strings in the URL.

Failures: connection errors, time-outs, 429 and 5xx answers are retried ``retries``
times with exponential back-off (``backoff``, ``2*backoff``, …); any other 4xx, a reply
that is not JSON, or JSON without ``choices[0].message.content`` stops at once. Each
ends in a one-line :class:`ChainZoomError`; the run keeps what it wrote and resumes
when started again, reusing the prompts already cached.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chainzoom.errors import ChainZoomError
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

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


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
        self.endpoint = completions_url(url)
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
            "url": public_url(self.endpoint),
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
        return join_user_text(answer_text(reply, self._where()).strip(), self.text)

    def _where(self) -> str:
        return f"openai {public_url(self.endpoint)}"

    def _post(self, body: dict) -> Any:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        tries = self.retries + 1
        for attempt in range(tries):
            try:
                return self._exchange(urllib.request.Request(self.endpoint, data, headers, method="POST"))
            except _Retryable as problem:
                if attempt + 1 == tries:
                    raise ChainZoomError(
                        f"{self._where()}: no usable answer after {tries} tries ({problem}); "
                        "start or fix the server and run again to resume"
                    ) from None
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _exchange(self, request: urllib.request.Request) -> Any:
        """One request: the decoded JSON reply, :class:`_Retryable`, or a final ChainZoomError."""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                content_type = response.headers.get_content_type()
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}{detail}") from None
            hint = f"; is {self.key_env} set to a valid key?" if exc.code in (401, 403) else ""
            raise ChainZoomError(f"{self._where()}: HTTP {exc.code}{detail}{hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable("timed out" if isinstance(reason, TimeoutError) else str(reason)) from None
        if content_type != "application/json":
            raise ChainZoomError(f"{self._where()}: answered {content_type}, not application/json (not a chat API?)")
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ChainZoomError(f"{self._where()}: the answer is not valid JSON ({exc})") from None


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
    """``http://host:port/v1`` -> ``http://host:port/v1/chat/completions`` (a full URL stays)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ChainZoomError(f"openai: expected an http(s) URL such as http://localhost:8000/v1, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def public_url(url: str) -> str:
    """The URL without user name, password or query string: safe for manifests and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message, if it sent one, shortened to one line."""
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body
    message = " ".join(str(message).split())[:200]
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
    if not url:
        raise ChainZoomError("openai: name the server, e.g. openai:http://localhost:8000/v1")
    if not model:
        raise ChainZoomError("openai: name the served model with model=NAME (--prompter-model NAME)")
    return OpenAIPrompter(url, model, **settings)
