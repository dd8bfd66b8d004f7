"""Descriptive image statistics: how much fine detail, how much information.

Neither is a quality score: noise raises both. They are reported beside the quality
metrics because they show plainly what interpolation does at high magnification
(detail and entropy collapse) and what a generative step adds back.

- sharpness: variance of the 4-neighbour Laplacian of the 8-bit-scaled BT.601 grey
  image, mirrored at the borders (OpenCV's ``Laplacian(grey, CV_64F).var()``);
- entropy: Shannon entropy in bits of the 256-bin histogram of the 8-bit grey image
  (scikit-image's ``shannon_entropy`` of the same image).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import laplace

from chainzoom.metrics.color import BT601, grey


def grey8(rgb: np.ndarray) -> np.ndarray:
    """The BT.601 grey image rounded to 8-bit integers (0..255)."""
    return np.clip(np.rint(grey(rgb, BT601) * 255.0), 0, 255).astype(np.uint8)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image on the 0..255 scale (higher: more fine detail)."""
    return float(laplace(grey8(rgb).astype(np.float64), mode="mirror").var())


def entropy(rgb: np.ndarray) -> float:
    """Shannon entropy (bits) of the 8-bit grey histogram, at most 8."""
    counts = np.bincount(grey8(rgb).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
