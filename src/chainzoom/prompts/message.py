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

from PIL import Image

from ..images import to_pil
from .base import PromptContext

#: The official Chain-of-Zoom multi-scale prompt, sent as the system message.
MULTISCALE_SYSTEM_MESSAGE = (
    "The second image is a zoom-in of the first image. Based on this knowledge, "
    "what is in the second image? Give me a set of words."
)


def context_images(context: PromptContext) -> list[Image.Image]:
    """The two images in the paper's order: [previous full state, zoomed view]."""
    return [to_pil(context.wide), to_pil(context.view)]


def join_user_text(generated: str, text: str | None) -> str:
    """Join a generated prompt with the user's text exactly as the official code does."""
    return f"{generated}, {text}," if text else generated
