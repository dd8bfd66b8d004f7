"""Prompters that need no model: no prompt at all, or one fixed text for every step."""

from __future__ import annotations

from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.runtime import Runtime


class NullPrompter(Prompter):
    """The empty prompt, the paper's ``null`` row."""

    id = "null"

    def describe(self, context: PromptContext) -> str:
        return ""


class FixedPrompter(Prompter):
    """The same user-given text at every step."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.id = "fixed"

    def describe(self, context: PromptContext) -> str:
        return self.text

    def settings(self) -> dict:
        return {"id": self.id, "text": self.text}


def create_null(argument: str | None, runtime: Runtime) -> NullPrompter:
    return NullPrompter()


def create_fixed(argument: str | None, runtime: Runtime) -> FixedPrompter:
    text = (argument or "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return FixedPrompter(text)
