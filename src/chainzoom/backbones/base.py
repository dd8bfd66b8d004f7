"""The Backbone seam: an image -> 4x image model, optionally reading a prompt."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # base classes stay importable without torch (``chainzoom models``)
    import torch


@dataclass(frozen=True)
class ModelCard:
    """What a user (and manifest.json) needs to know about a backbone."""

    id: str
    description: str
    architecture: str
    scale: int
    text_aware: bool = False
    parameters: int | None = None
    licence: str | None = None
    source: str | None = None
    weights_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backbone(ABC):
    """Upscales an RGB image by a fixed integer ``scale``.

    Images are ``float32`` tensors ``[3, H, W]`` in ``[0, 1]`` on the CPU; a backbone
    moves them to its own device and returns them on the CPU, clamped to ``[0, 1]``.
    ``text_aware`` backbones read the prompt; the others ignore it.
    """

    scale: int = 4
    text_aware: bool = False

    @abstractmethod
    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        """Return ``image`` upscaled ``scale`` times."""

    @abstractmethod
    def card(self) -> ModelCard:
        """Describe this backbone for listings and manifests."""


class Restorer(Backbone):
    """A backbone that upscales by bicubic first and then restores at the output size.

    The one-step diffusion models work this way. :meth:`restore` is that second half on
    its own, so a caller that must make the bicubic picture itself (the official
    protocol, in 8 bits) can hand it over; :meth:`upscale` is both halves plus the
    backbone's colour fix.
    """

    @abstractmethod
    def restore(self, view: torch.Tensor, prompt: str = "") -> torch.Tensor:
        """The model's output for ``view`` (already at the output size), in ``[0, 1]``, before any colour fix."""

    @property
    @abstractmethod
    def color_fix_method(self) -> str:
        """The colour fix :meth:`upscale` applies against the bicubic view (``none``, ``wavelet``, ``adain``)."""


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
