"""The degradation pipeline's settings: plain dataclasses, importable without torch (the CLI's config uses them).

The defaults are Real-ESRGAN's x4 settings, which OSEDiff's ``params_realesrgan.yml`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
DEGRADATIONS = ("realesrgan", "bicubic")
Range = tuple[float, float]


@dataclass(frozen=True)
class BlurSettings:
    """One stage's blur: which kernel family, with what probability, over what ranges."""

    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    sigma: Range = (0.2, 3.0)
    #: Shape exponent of the generalised Gaussian, and of the plateau kernel.
    beta_generalized: Range = (0.5, 4.0)
    beta_plateau: Range = (1.0, 2.0)


@dataclass(frozen=True)
class StageSettings:
    """One round of resize, noise and JPEG (the blur is in :class:`BlurSettings`)."""

    blur: BlurSettings = field(default_factory=BlurSettings)
    blur_prob: float = 1.0
    #: Probabilities of resizing up, down, or keeping the size.
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: Range = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    #: Gaussian noise sigma, in 8-bit levels.
    noise_range: Range = (1.0, 30.0)
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Range = (30.0, 95.0)


def _second_stage() -> StageSettings:
    return StageSettings(
        blur=BlurSettings(sigma=(0.2, 1.5)),
        blur_prob=0.8,
        resize_prob=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class RealESRGANSettings:
    """The whole pipeline; the defaults are Real-ESRGAN's x4 (and OSEDiff's) settings."""

    scale: int = 4
    #: Blur kernel sizes drawn from (odd); every kernel is zero-padded to the largest.
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    first: StageSettings = field(default_factory=StageSettings)
    second: StageSettings = field(default_factory=_second_stage)
    final_sinc_prob: float = 0.8

    @property
    def max_kernel(self) -> int:
        return max(self.kernel_sizes)

    @property
    def min_side(self) -> int:
        """The smallest HR side the blur's reflection padding can take after the deepest first-stage shrink."""
        return math.ceil((self.max_kernel // 2 + 1) / self.first.resize_range[0])
