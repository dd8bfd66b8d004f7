"""Prompters: registry of everything that can write a step's prompt.

Add a family by adding a module and one ``PROMPTERS.register`` line; the module is
imported only when a user picks it.
"""

from __future__ import annotations

from ..registry import Registry, Runtime
from .base import PromptContext, Prompter

PROMPTERS: Registry[Prompter] = Registry("prompter")
PROMPTERS.register("null", "chainzoom.prompts.simple:create_null", "no prompt (the paper's null row)")
PROMPTERS.register(
    "fixed",
    "chainzoom.prompts.simple:create_fixed",
    'the same text at every step: fixed:"a cat on a sofa"',
    needs_argument=True,
)


def create_prompter(spec: str, runtime: Runtime | None = None, **options) -> Prompter:
    """Build a prompter from a spec string such as ``null`` or ``fixed:"text"``."""
    return PROMPTERS.create(spec, runtime, **options)


__all__ = ["PROMPTERS", "PromptContext", "Prompter", "create_prompter"]
