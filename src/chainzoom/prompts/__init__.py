"""Prompters: registry of everything that can write a step's prompt.

Add a family by adding a module and one ``PROMPTERS.register`` line; the module is
imported only when a user picks it.
"""

from __future__ import annotations

from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.registry import Registry, Runtime

PROMPTERS: Registry[Prompter] = Registry("prompter")
PROMPTERS.register("null", "chainzoom.prompts.simple:create_null", "no prompt (the paper's null row)")
PROMPTERS.register(
    "fixed",
    "chainzoom.prompts.simple:create_fixed",
    'the same text at every step: fixed:"a cat on a sofa"',
    needs_argument=True,
)
PROMPTERS.register(
    "vlm",
    "chainzoom.prompts.vlm:create_vlm",
    "a local vision-language model writes each prompt from the last two states (the paper's): "
    "vlm[:ID_OR_FOLDER][,adapter=LORA_DIR] (default Qwen/Qwen2.5-VL-3B-Instruct)",
    extra="vlm",
)
PROMPTERS.register(
    "openai",
    "chainzoom.prompts.openai:create_openai",
    "an OpenAI-compatible chat server (vLLM, llama.cpp, Ollama, LM Studio) writes each prompt: "
    "openai:http://host:port/v1,model=NAME",
    needs_argument=True,
)
PROMPTERS.register(
    "labels",
    "chainzoom.prompts.labels:create_labels",
    "offline ImageNet tags of the view from a bundled EfficientNet-Lite0 (a DAPE-tag stand-in)",
    extra="labels",
)


def create_prompter(spec: str, runtime: Runtime | None = None, **options) -> Prompter:
    """Build a prompter from a spec string such as ``null`` or ``fixed:"text"``."""
    return PROMPTERS.create(spec, runtime, **options)


__all__ = ["PROMPTERS", "PromptContext", "Prompter", "create_prompter"]
