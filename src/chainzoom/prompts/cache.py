"""Prompts cached on disk, so a resumed or repeated run does not ask the prompt model again.

A prompt is stored under a key made of everything that decides it: the prompter's
:meth:`~chainzoom.prompts.base.Prompter.settings` (model, adapter digest, decoding,
user text…), the step (sampling seeds depend on it) and the sha256 of both images as
the prompt model sees them — 8-bit samples, as the official code's PNG files hold.
Hashing the 8-bit samples rather than float bytes means a state reloaded from its PNG
(the chain quantizes every state to its saved bit depth) finds the same key.

The cache is one small JSON file (``prompts.json`` in the run folder), rewritten
atomically after each new prompt: an interrupted run leaves the previous complete
file, never a torn one. It stores key digests, step, prompter id and prompt text —
never the settings themselves, so nothing secret can land there.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from chainzoom.errors import ChainZoomError
from chainzoom.io.atomic import atomic_write_json
from chainzoom.io.images import to_samples
from chainzoom.prompts.base import PromptContext, Prompter

CACHE_FILE = "prompts.json"
FORMAT_VERSION = 2


def image_digest(image: torch.Tensor) -> str:
    """sha256 of the image's 8-bit samples and shape (what a prompt model is shown)."""
    samples = to_samples(image)
    digest = hashlib.sha256(repr(samples.shape).encode())
    digest.update(samples.tobytes())
    return digest.hexdigest()


def prompt_key(settings: dict, context: PromptContext) -> str:
    """The cache key of one question: prompter settings, step and both images."""
    question = {
        "settings": settings,
        "step": context.step,
        "wide": image_digest(context.wide),
        "view": image_digest(context.view),
    }
    return hashlib.sha256(json.dumps(question, sort_keys=True, default=str).encode()).hexdigest()


class PromptCache:
    """A JSON file of prompts by key; every :meth:`put` rewrites it atomically."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data["version"] != FORMAT_VERSION:
                raise ValueError(f"format version {data['version']!r}, expected {FORMAT_VERSION}")
            entries = data["prompts"]
            if not all(isinstance(entry.get("prompt"), str) for entry in entries.values()):
                raise ValueError("an entry has no prompt text")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ChainZoomError(f"prompt cache {self.path} is damaged ({exc}); delete it to ask again") from None
        return entries

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return None if entry is None else entry["prompt"]

    def put(self, key: str, prompt: str, step: int, prompter: str) -> None:
        self.entries[key] = {"step": step, "prompter": prompter, "prompt": prompt}
        atomic_write_json(self.path, {"version": FORMAT_VERSION, "prompts": self.entries})


class CachedPrompter(Prompter):
    """Wraps a prompter: answers from the cache when it can, asks ``inner`` otherwise."""

    def __init__(self, inner: Prompter, cache_path: str | os.PathLike) -> None:
        self.inner = inner
        self.id = inner.id
        self.cache = PromptCache(cache_path)
        self._settings = inner.settings()
        self.hits = 0
        self.misses = 0

    def settings(self) -> dict:
        return self._settings

    def describe(self, context: PromptContext) -> str:
        key = prompt_key(self._settings, context)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        prompt = self.inner.describe(context)
        self.cache.put(key, prompt, context.step, self.id)
        return prompt
