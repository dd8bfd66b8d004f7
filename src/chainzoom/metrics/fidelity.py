"""Full-reference fidelity: PSNR and SSIM of an image against a reference of the same size.

SSIM follows Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004): an 11x11 Gaussian window
with sigma 1.5, K1 = 0.01, K2 = 0.03, the data range 1, statistics over the "valid"
window positions only (as in the authors' MATLAB code), averaged over the R, G and B
channels. These are the settings of scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, which the tests compare with.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11 taps: the window of the paper
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(image: np.ndarray, reference: np.ndarray) -> None:
    if image.shape != reference.shape:
        raise ValueError(f"images differ in shape: {image.shape} vs {reference.shape}")


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for values in ``[0, 1]``; ``inf`` for identical images."""
    _check_pair(image, reference)
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window() -> np.ndarray:
    taps = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    window = np.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def _local_mean(channel: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Gaussian-weighted mean at every window position that lies wholly inside the image."""
    blurred = correlate1d(correlate1d(channel, window, axis=0), window, axis=1)
    r = SSIM_RADIUS
    return blurred[r:-r, r:-r]


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean structural similarity over window positions and channels (``[H, W, C]`` in ``[0, 1]``)."""
    _check_pair(image, reference)
    if min(image.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1} px a side, got {image.shape[:2]}")
    window = _gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    scores = []
    for channel in range(image.shape[2]):
        x = np.asarray(image[..., channel], np.float64)
        y = np.asarray(reference[..., channel], np.float64)
        mx, my = _local_mean(x, window), _local_mean(y, window)
        vx = _local_mean(x * x, window) - mx * mx
        vy = _local_mean(y * y, window) - my * my
        cxy = _local_mean(x * y, window) - mx * my
        index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(index.mean())
    return float(np.mean(scores))
