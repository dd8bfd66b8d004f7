"""The Prompter seam: text that guides a step, written from the last two scale-states."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptContext:
    """What a prompter sees before step ``step`` (the paper's AR-2 order).

    ``wide`` is the previous scale-state x_{i-1} (the wider context) and ``view`` is
    the region about to be upscaled, resized to the size of ``wide`` with bicubic
    interpolation, which is the pair of 512x512 images the official code shows its VLM.
    Both are ``float32`` ``[3, H, W]`` tensors in ``[0, 1]``.
    """

    step: int
    wide: torch.Tensor
    view: torch.Tensor


class Prompter(ABC):
    """Writes the text prompt for one zoom step."""

    #: Stable identity used in manifests and prompt caches.
    id: str = "prompter"

    @abstractmethod
    def describe(self, context: PromptContext) -> str:
        """The prompt for the step that upscales ``context.view``."""

    def settings(self) -> dict:
        """Everything that changes this prompter's output, for manifests and caches."""
        return {"id": self.id}
