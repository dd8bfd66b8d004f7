"""Colour conversions: sRGB to CIE L*a*b* (D65) and the colour-shift measure of the drift report.

The conversion follows IEC 61966-2-1 (sRGB transfer curve, D65 primaries) and CIE 15
(L*a*b* with the D65 2-degree white), the same constants scikit-image's ``rgb2lab``
uses, so values can be compared with it. Luma weights for the grey images the
no-reference metrics read are kept here too, so each metric names which grey it uses.
"""

from __future__ import annotations

import numpy as np

#: Linear sRGB -> CIE XYZ (D65), IEC 61966-2-1.
SRGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
#: The D65 reference white for the 2-degree observer (XYZ, Y = 1).
D65_WHITE = np.array([0.95047, 1.0, 1.08883])

#: ITU-R BT.601 luma, MATLAB's ``rgb2gray``: what NIQE's reference code was run on.
BT601 = np.array([0.2989, 0.5870, 0.1140])
#: ITU-R BT.709 luma as scikit-image's ``rgb2gray`` has it: what the BRISQUE package's model saw.
BT709 = np.array([0.2125, 0.7154, 0.0721])


def grey(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> ``[H, W]`` as a weighted sum of R, G and B, in float64."""
    return np.asarray(rgb, dtype=np.float64) @ weights


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve (values in ``[0, 1]``)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` sRGB in ``[0, 1]`` -> CIE L*a*b* (L in ``[0, 100]``), D65 white."""
    xyz = srgb_to_linear(rgb) @ SRGB_TO_XYZ.T / D65_WHITE
    epsilon, kappa = (6 / 29) ** 3, (29 / 6) ** 2 / 3
    f = np.where(xyz > epsilon, np.cbrt(xyz), kappa * xyz + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def mean_color_shift(image: np.ndarray, reference: np.ndarray) -> float:
    """CIE76 ΔE*ab between the mean L*a*b* colours of two images: a colour cast, not detail.

    Averaging in Lab before the difference measures how far the overall colour has
    moved (the drift a chain can accumulate) and ignores texture that differs
    pixel by pixel, which PSNR already reports.
    """
    shift = srgb_to_lab(image).reshape(-1, 3).mean(axis=0) - srgb_to_lab(reference).reshape(-1, 3).mean(axis=0)
    return float(np.sqrt(np.sum(shift**2)))
