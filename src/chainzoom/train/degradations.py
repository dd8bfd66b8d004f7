"""Synthetic low-resolution inputs for training: Real-ESRGAN's second-order pipeline, or bicubic.

OSEDiff (and Chain-of-Zoom's SD3 training after it) makes each training pair on the fly
from a high-resolution crop with the Real-ESRGAN degradation (Wang et al. 2021): two
rounds of blur, random resize, noise and JPEG, then a final resize to the low resolution
with an optional sinc filter. This is a re-implementation in numpy/torch from the
published description and BasicSR's parameter names; its default ranges are the ones
OSEDiff's ``params_realesrgan.yml`` uses (Real-ESRGAN's own x4 settings).

Every random choice is drawn from the :class:`numpy.random.Generator` passed in, so a
pair is a pure function of the image and the generator's state, and every drawn
parameter is returned in :attr:`Degraded.record` (so tests and previews can show what
was done). What differs from Real-ESRGAN's GPU code: images are degraded one at a time
(Real-ESRGAN draws one resize per batch), JPEG goes through Pillow (Real-ESRGAN uses a
differentiable JPEG with a fractional quality; here the quality is rounded to an
integer), and the USM sharpening of the target that Real-ESRGAN applies is not done.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from chainzoom.core.resample import resize
from chainzoom.train.settings import (
    DEGRADATIONS,
    KERNEL_KINDS,
    RESIZE_MODES,
    BlurSettings,
    Range,
    RealESRGANSettings,
    StageSettings,
)


@dataclass
class Degraded:
    """A low-resolution image ``[3, H/scale, W/scale]`` in ``[0, 1]`` and the parameters drawn for it."""

    lr: torch.Tensor
    record: dict[str, Any]


# ---------------------------------------------------------------------------- kernels


def _grid(size: int) -> np.ndarray:
    """``[size, size, 2]`` (x, y) offsets from the centre of an odd kernel."""
    axis = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx, yy], axis=-1)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``g^T Σ^-1 g`` over the grid for the rotated covariance ``R diag(σx², σy²) R^T``."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    grid = _grid(size)
    return np.einsum("hwi,ij,hwj->hw", grid, np.linalg.inv(covariance), grid)


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """An (an)isotropic 2-D Gaussian, summing to 1."""
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """``exp(-½ q^β)``: β < 1 is peakier than a Gaussian, β > 1 flatter."""
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """``1 / (1 + q^β)``: a flat top with heavy tails."""
    return _normalised(1.0 / (_quadratic_form(size, sigma_x, sigma_y, theta) ** beta + 1.0))


def sinc_kernel(size: int, cutoff: float, pad_to: int = 0) -> np.ndarray:
    """A circular low-pass (2-D sinc, ``c J1(c r) / 2πr``) with cutoff ``cutoff`` rad/px, summing to 1.

    It models ringing and overshoot: sharpening halos and JPEG-like ripples.
    """
    radius = np.sqrt((_grid(size) ** 2).sum(-1))
    bessel = torch.special.bessel_j1(torch.from_numpy(cutoff * radius)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = cutoff * bessel / (2 * math.pi * radius)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * math.pi)  # the limit at r = 0
    kernel = _normalised(kernel)
    return _pad_kernel(kernel, pad_to) if pad_to > size else kernel


def _pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def _beta(rng: np.random.Generator, bounds: Range) -> float:
    """Below 1 or above 1 with equal chance, as BasicSR draws it (so both shapes are common)."""
    low, high = bounds
    if rng.uniform() < 0.5 and low < 1:
        return float(rng.uniform(low, min(1.0, high)))
    return float(rng.uniform(max(1.0, low), high))


def draw_blur_kernel(rng: np.random.Generator, blur: BlurSettings, sizes: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """A random stage kernel padded to ``max(sizes)``, and what was drawn."""
    size = int(rng.choice(sizes))
    if rng.uniform() < blur.sinc_prob:
        # Smaller kernels cannot hold a low cutoff's wide lobes.
        cutoff = float(rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi))
        kernel = sinc_kernel(size, cutoff)
        record: dict[str, Any] = {"kind": "sinc", "size": size, "cutoff": cutoff}
    else:
        kind = str(rng.choice(KERNEL_KINDS, p=np.asarray(blur.kernel_prob) / sum(blur.kernel_prob)))
        sigma_x = float(rng.uniform(*blur.sigma))
        if kind.endswith("iso") and not kind.endswith("aniso"):
            sigma_y, theta = sigma_x, 0.0
        else:
            sigma_y, theta = float(rng.uniform(*blur.sigma)), float(rng.uniform(-math.pi, math.pi))
        record = {"kind": kind, "size": size, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta}
        if kind.startswith("generalized"):
            record["beta"] = _beta(rng, blur.beta_generalized)
            kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, record["beta"])
        elif kind.startswith("plateau"):
            record["beta"] = _beta(rng, blur.beta_plateau)
            kernel = plateau_kernel(size, sigma_x, sigma_y, theta, record["beta"])
        else:
            kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    return _pad_kernel(kernel, max(sizes)), record


def filter2d(image: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Convolve ``[C,H,W]`` with a 2-D kernel, borders reflected."""
    size = kernel.shape[0]
    weight = torch.from_numpy(kernel).to(image.dtype).expand(image.shape[0], 1, size, size)
    padded = F.pad(image.unsqueeze(0), (size // 2,) * 4, mode="reflect")
    return F.conv2d(padded, weight, groups=image.shape[0])[0]


# ---------------------------------------------------------------------------- resize, noise, JPEG


def interpolate(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``F.interpolate`` of ``[C,H,W]`` to ``(h, w)`` (no antialiasing: aliasing is a degradation)."""
    return F.interpolate(image.unsqueeze(0), size=size, mode=mode)[0]


def add_gaussian_noise(image: torch.Tensor, sigma: float, gray: bool, rng: np.random.Generator) -> torch.Tensor:
    """Add N(0, (sigma/255)²), one field for all channels when ``gray``, clipped to ``[0, 1]``."""
    channels, height, width = image.shape
    noise = rng.standard_normal((1 if gray else channels, height, width)) * (sigma / 255.0)
    return (image + torch.from_numpy(noise).to(image.dtype)).clamp(0.0, 1.0)


def add_poisson_noise(image: torch.Tensor, scale: float, gray: bool, rng: np.random.Generator) -> torch.Tensor:
    """Shot noise: Poisson at as many levels as the image has (rounded up to a power of 2), times ``scale``."""
    quantised = (image * 255.0).round().clamp(0, 255) / 255.0
    if gray:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        quantised = (quantised * weights).sum(0, keepdim=True)
    levels = 2.0 ** math.ceil(math.log2(max(len(torch.unique(quantised)), 2)))
    counts = rng.poisson(quantised.double().numpy() * levels) / levels
    noise = torch.from_numpy(counts).to(image.dtype) - quantised
    return (image + noise * scale).clamp(0.0, 1.0)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress and decompress through Pillow at ``quality``."""
    samples = (image.clamp(0.0, 1.0) * 255.0).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(samples, "RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(image.dtype)


# ---------------------------------------------------------------------------- the pipeline


def _draw_jpeg(rng: np.random.Generator, bounds: Range) -> int:
    return round(float(rng.uniform(*bounds)))


def _noise(image: torch.Tensor, stage: StageSettings, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    gray = bool(rng.uniform() < stage.gray_noise_prob)
    if rng.uniform() < stage.gaussian_noise_prob:
        sigma = float(rng.uniform(*stage.noise_range))
        return add_gaussian_noise(image, sigma, gray, rng), {"noise": "gaussian", "sigma": sigma, "gray": gray}
    scale = float(rng.uniform(*stage.poisson_scale_range))
    return add_poisson_noise(image, scale, gray, rng), {"noise": "poisson", "scale": scale, "gray": gray}


def _resize_factor(rng: np.random.Generator, stage: StageSettings) -> tuple[str, float]:
    direction = str(rng.choice(("up", "down", "keep"), p=np.asarray(stage.resize_prob) / sum(stage.resize_prob)))
    if direction == "up":
        return direction, float(rng.uniform(1.0, stage.resize_range[1]))
    if direction == "down":
        return direction, float(rng.uniform(stage.resize_range[0], 1.0))
    return direction, 1.0


def realesrgan(hr: torch.Tensor, settings: RealESRGANSettings, rng: np.random.Generator) -> Degraded:
    """Real-ESRGAN's second-order degradation of ``hr`` ``[3,H,W]`` in ``[0, 1]`` (H, W multiples of the scale)."""
    height, width = hr.shape[-2:]
    if height % settings.scale or width % settings.scale:
        raise ValueError(f"HR size {width}x{height} is not a multiple of the scale {settings.scale}")
    if min(height, width) < settings.min_side:
        raise ValueError(f"HR size {width}x{height} is too small for the Real-ESRGAN degradation "
                         f"(at least {settings.min_side} px a side)")  # fmt: skip
    # Kernels are drawn first, as Real-ESRGAN's data loader does, then the image operations.
    kernel1, blur1 = draw_blur_kernel(rng, settings.first.blur, settings.kernel_sizes)
    kernel2, blur2 = draw_blur_kernel(rng, settings.second.blur, settings.kernel_sizes)
    if rng.uniform() < settings.final_sinc_prob:
        size = int(rng.choice(settings.kernel_sizes))
        cutoff = float(rng.uniform(math.pi / 3, math.pi))
        final_kernel: np.ndarray | None = sinc_kernel(size, cutoff, pad_to=settings.max_kernel)
        final: dict[str, Any] = {"sinc": True, "size": size, "cutoff": cutoff}
    else:
        final_kernel, final = None, {"sinc": False}
    record: dict[str, Any] = {"degradation": "realesrgan"}

    out = hr.float()
    first: dict[str, Any] = {"blur": blur1}
    out = filter2d(out, kernel1)
    direction, factor = _resize_factor(rng, settings.first)
    mode = str(rng.choice(RESIZE_MODES))
    out = interpolate(out, (int(height * factor), int(width * factor)), mode)
    first.update(resize=direction, factor=factor, mode=mode)
    out, noise = _noise(out, settings.first, rng)
    first.update(noise)
    first["jpeg"] = _draw_jpeg(rng, settings.first.jpeg_range)
    out = jpeg(out, first["jpeg"])
    record["first"] = first

    second: dict[str, Any] = {"blur": blur2 if rng.uniform() < settings.second.blur_prob else None}
    if second["blur"] is not None:
        out = filter2d(out, kernel2)
    direction, factor = _resize_factor(rng, settings.second)
    mode = str(rng.choice(RESIZE_MODES))
    out = interpolate(out, (int(height / settings.scale * factor), int(width / settings.scale * factor)), mode)
    second.update(resize=direction, factor=factor, mode=mode)
    out, noise = _noise(out, settings.second, rng)
    second.update(noise)
    record["second"] = second

    # [resize to LR + sinc] and JPEG, in either order (other orders make twisted lines).
    final["order"] = "resize_first" if rng.uniform() < 0.5 else "jpeg_first"
    final["mode"] = str(rng.choice(RESIZE_MODES))
    final["jpeg"] = _draw_jpeg(rng, settings.second.jpeg_range)
    lr_size = (height // settings.scale, width // settings.scale)

    def resize_and_sinc(image: torch.Tensor) -> torch.Tensor:
        image = interpolate(image, lr_size, final["mode"])
        return filter2d(image, final_kernel) if final_kernel is not None else image

    if final["order"] == "resize_first":
        out = jpeg(resize_and_sinc(out), final["jpeg"])
    else:
        out = resize_and_sinc(jpeg(out, final["jpeg"]))
    record["final"] = final
    return Degraded((out * 255.0).round().clamp(0, 255) / 255.0, record)


def bicubic(hr: torch.Tensor, scale: int = 4) -> Degraded:
    """The clean ``scale``-times downscale (Pillow bicubic, antialiased), rounded to 8 bits."""
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"HR size {width}x{height} is not a multiple of the scale {scale}")
    lr = resize(hr.float(), (width // scale, height // scale), "bicubic")
    return Degraded((lr * 255.0).round() / 255.0, {"degradation": "bicubic", "scale": scale})


def degrade(name: str, hr: torch.Tensor, rng: np.random.Generator, settings: RealESRGANSettings) -> Degraded:
    """Degradation ``name`` (:data:`DEGRADATIONS`) of ``hr``; ``bicubic`` draws nothing from ``rng``."""
    if name == "realesrgan":
        return realesrgan(hr, settings, rng)
    if name == "bicubic":
        return bicubic(hr, settings.scale)
    raise ValueError(f"unknown degradation {name!r} (known: {', '.join(DEGRADATIONS)})")
