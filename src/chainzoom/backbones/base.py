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

    @property
    def wrapped(self) -> Backbone | None:
        """The backbone this one wraps, or ``None`` for a model itself (the default).

        A wrapper (tiling, placement, caching) adds *how* a model runs, never *what* it
        can do: it overrides this to return the backbone it runs, so that a caller reads a
        capability (:class:`Restorer`, its colour fix, a memory placement) from the
        component with :func:`component_of` or :func:`restorer_of`, never from
        ``isinstance`` on whatever object it was handed.
        """
        return None


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


def wrappers_of(backbone: Backbone) -> list[Backbone]:
    """``backbone`` and every backbone it wraps, outermost first (following :attr:`Backbone.wrapped`)."""
    chain = [backbone]
    while (inner := chain[-1].wrapped) is not None:
        if any(inner is seen for seen in chain):
            raise ValueError(f"backbone {type(inner).__name__} wraps itself")
        chain.append(inner)
    return chain


def component_of(backbone: Backbone) -> Backbone:
    """The model at the bottom of any wrappers around ``backbone`` (``backbone`` itself if none)."""
    return wrappers_of(backbone)[-1]


def restorer_of(backbone: Backbone) -> Restorer | None:
    """The :class:`Restorer` that ``backbone`` is or wraps, else ``None``.

    The official protocol hands a restorer its own 8-bit bicubic picture; every front-end
    builds the backbone wrapped in the tiler, so ``isinstance(backbone, Restorer)`` on what
    it receives would silently take the plain-x4 route instead. The outermost restorer in
    the chain wins, so a wrapper that is itself a restorer (and restores its own way) is
    used as such.
    """
    for layer in wrappers_of(backbone):
        if isinstance(layer, Restorer):
            return layer
    return None


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
