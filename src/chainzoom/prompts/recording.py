"""A prompter wrapper that keeps every context it is asked about (for scoring and training pairs)."""

from __future__ import annotations

from typing import Any

from chainzoom.prompts.base import PromptContext, Prompter


class RecordingPrompter(Prompter):
    """Passes each request to ``inner`` (or answers ``""`` without one) and keeps its context."""

    def __init__(self, inner: Prompter | None = None) -> None:
        self.inner = inner
        self.id = inner.id if inner is not None else "recording"
        self.contexts: list[PromptContext] = []

    def describe(self, context: PromptContext) -> str:
        self.contexts.append(context)
        return self.inner.describe(context) if self.inner is not None else ""

    def settings(self) -> dict[str, Any]:
        return self.inner.settings() if self.inner is not None else super().settings()
