"""What the paper's prompt model is shown, and how its answer becomes a step's prompt.

Shared by every prompter that talks to a vision-language model (a local transformers
model or an OpenAI-compatible server), so both ask exactly the official question:

- the **system** message is the official multi-scale instruction, word for word;
- the user turn holds only the two images, in the official order: the previous
  scale-state x_{i-1} (``context.wide``) first, the zoomed view second, both at the
  view size (512x512 in the official code), as 8-bit RGB — the official code hands
  the VLM PNG files, so we round to 8 bits as a PNG would;
- the answer is joined with the user's own text the official way,
  ``"{generated}, {text},"``, or used alone when there is no user text.
"""

from __future__ import annotations

import hashlib

from PIL import Image

from chainzoom.core.vocabulary import PROMPT_CONTEXTS
from chainzoom.io.images import to_pil
from chainzoom.prompts.base import PromptContext

#: The official Chain-of-Zoom multi-scale prompt, sent as the system message.
MULTISCALE_SYSTEM_MESSAGE = (
    "The second image is a zoom-in of the first image. Based on this knowledge, "
    "what is in the second image? Give me a set of words."
)
#: The official single-image question (``--rec_type recursive``), also a system message;
#: the paper's prompt ablation compares it with the multi-scale one.
SINGLE_SYSTEM_MESSAGE = "What is in this image? Give me a set of words."
#: What the VLM is shown: both scale-states (the paper's) or the zoomed view alone.
CONTEXTS = dict(zip(PROMPT_CONTEXTS, (MULTISCALE_SYSTEM_MESSAGE, SINGLE_SYSTEM_MESSAGE)))
#: The official number of new tokens per prompt (the Aug 2025 code; 128 in May 2025).
OFFICIAL_MAX_NEW_TOKENS = 32


def context_images(context: PromptContext, kind: str = "multiscale") -> list[Image.Image]:
    """The images in the official order: [previous full state, zoomed view], or the view alone."""
    if kind == "single":
        return [to_pil(context.view)]
    return [to_pil(context.wide), to_pil(context.view)]


def join_user_text(generated: str, text: str | None) -> str:
    """Join a generated prompt with the user's text exactly as the official code does."""
    return f"{generated}, {text}," if text else generated


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for one step, so neighbouring steps and runs do not share a stream."""
    digest = hashlib.sha256(f"chainzoom-prompt:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
