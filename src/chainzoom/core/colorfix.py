"""Colour fixes that give a super-resolved image back the colours of its input.

Generative SR (one-step diffusion above all) can shift colours: the VAE and the
denoiser are free to repaint low frequencies. StableSR introduced two fixes that
OSEDiff and Chain-of-Zoom expose as ``--align_method`` (CoZ default: none; OSEDiff
SD 2.1 default: AdaIN):

- **wavelet**: keep the output's high frequencies (the new detail) and take the
  low frequencies (colour, shading) from the reference;
- **adain**: shift and scale each output channel to the reference's channel mean
  and standard deviation.

The reference is the input view upscaled to the output size (bicubic), so both
images are on the same pixel grid. Any backbone can use :func:`color_fix`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chainzoom.core.vocabulary import COLOR_FIXES

METHODS = COLOR_FIXES

#: Levels of the à-trous wavelet decomposition (StableSR's value): the blur radius
#: doubles per level, so the low-pass band ends at about 2**5 = 32 px.
WAVELET_LEVELS = 5
#: Added to the variance in AdaIN so flat channels do not divide by zero.
ADAIN_EPS = 1e-5


def color_fix(output: torch.Tensor, reference: torch.Tensor, method: str) -> torch.Tensor:
    """Return ``output`` ``[3,H,W]`` with the colours of ``reference`` (same size), clamped to [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"unknown colour fix {method!r} (known: {', '.join(METHODS)})")
    if output.shape != reference.shape or output.dim() != 3:
        raise ValueError(
            f"colour fix needs two [C,H,W] images of one size, got {tuple(output.shape)} and {tuple(reference.shape)}"
        )
    if method == "none":
        return output.clamp(0.0, 1.0)
    fix = wavelet_color_fix if method == "wavelet" else adain_color_fix
    return fix(output.float(), reference.float()).clamp_(0.0, 1.0)


def adain_color_fix(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Match each channel's mean and standard deviation to the reference's."""
    out_mean, out_std = _channel_stats(output)
    ref_mean, ref_std = _channel_stats(reference)
    return (output - out_mean) / out_std * ref_std + ref_mean


def wavelet_color_fix(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Output's high-frequency bands plus the reference's low-frequency residual."""
    output_high, _ = wavelet_decomposition(output)
    _, reference_low = wavelet_decomposition(reference)
    return output_high + reference_low


def wavelet_decomposition(image: torch.Tensor, levels: int = WAVELET_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``image`` into (sum of high-frequency bands, low-frequency residual); they add up to ``image``."""
    high = torch.zeros_like(image)
    low = image
    for level in range(levels):
        blurred = _wavelet_blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def _wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """A 3x3 binomial blur dilated by ``radius`` (one à-trous level), edges replicated."""
    channels = image.shape[0]
    taps = torch.tensor([0.25, 0.5, 0.25], dtype=image.dtype, device=image.device)
    kernel = torch.outer(taps, taps).expand(channels, 1, 3, 3)
    padded = F.pad(image.unsqueeze(0), (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)[0]


def _channel_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image.reshape(image.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1)
    std = (flat.var(dim=1) + ADAIN_EPS).sqrt().view(-1, 1, 1)
    return mean, std
