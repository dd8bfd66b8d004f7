"""Scale-states: what a zoom chain produces, one per zoom level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from chainzoom.core.geometry import Box


@dataclass
class ScaleState:
    """One zoom level.

    ``image`` is ``float32 [3, H, W]`` in ``[0, 1]`` (every state has the view size),
    ``alpha`` the matching ``[1, H, W]`` alpha channel when the input had one.
    ``box`` is the region of the input this state shows, in input pixels, and
    ``magnification`` its output pixels per input pixel. ``prompt`` is the text that
    guided the step that made it (``None`` for state 0 and for interpolation).
    ``seconds`` holds timings by phase (``backbone``, ``prompt``, ``total``).
    ``decision`` is what an adaptive policy chose for the step that made it (backbone,
    factor, the scores it compared), ``None`` in a fixed chain.
    """

    index: int
    image: torch.Tensor
    box: Box
    magnification: float
    prompt: str | None = None
    alpha: torch.Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    decision: dict[str, Any] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[-1]), int(self.image.shape[-2])
