"""BRISQUE (Mittal, Moorthy & Bovik, IEEE TIP 2012) with the model the ``brisque`` package ships.

Lower is better (about 0 to 100). 36 natural-scene-statistics features (the MSCN
coefficients and four neighbour products, fitted with asymmetric generalised
Gaussians, at full and half scale) are scaled and fed to the package's support vector
regressor (``models/svm.txt`` and ``normalize.pickle``, Apache-2.0), which
libsvm evaluates.

The package's own ``BRISQUE.score`` fails on numpy >= 2.4 (it converts one-element
arrays with ``float()``), so its feature extraction is followed here step by step,
with the same grey conversion, kernels, constants and half-scale resize (OpenCV
bicubic) that its model was trained with; the tests compare the two on fixed images.
"""

from __future__ import annotations

import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.signal import convolve2d
from scipy.special import gammaln

from chainzoom.metrics.color import BT709, grey

KERNEL_SIZE = 7
KERNEL_SIGMA = 7 / 6
MSCN_C = 1 / 255  # the package works on grey values in [0, 1]
#: The shape parameter is searched in this bracket (the ratio it is solved from is monotonic).
ALPHA_BRACKET = (0.05, 50.0)
#: Smallest side for which the half-scale image still has neighbour products in both directions.
MIN_SIDE = 8


class BrisqueUnavailable(RuntimeError):
    """The brisque package (model), libsvm or OpenCV is not installed."""


@lru_cache(maxsize=1)
def bundled_model() -> tuple[Any, np.ndarray, np.ndarray]:
    """(libsvm model, feature minima, feature maxima) from the installed ``brisque`` package's files."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise BrisqueUnavailable("the brisque package is not installed (pip install brisque)")
    try:
        from libsvm import svmutil
    except ImportError:
        raise BrisqueUnavailable("libsvm is not installed (pip install libsvm-official)") from None
    if importlib.util.find_spec("cv2") is None:
        raise BrisqueUnavailable("OpenCV is not installed (pip install opencv-python-headless)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    model = svmutil.svm_load_model(str(folder / "svm.txt"))
    with open(folder / "normalize.pickle", "rb") as handle:  # the package's own file: two lists of floats
        limits = pickle.load(handle)
    return model, np.asarray(limits["min_"], np.float64), np.asarray(limits["max_"], np.float64)


def _kernel() -> np.ndarray:
    """The package's normalised Gaussian, with its (redundant) constant factor kept: see :func:`mscn`."""
    y, x = np.indices((KERNEL_SIZE, KERNEL_SIZE)) - KERNEL_SIZE // 2
    kernel = 1 / (2 * np.pi * KERNEL_SIGMA**2) * np.exp(-(x**2 + y**2) / (2 * KERNEL_SIGMA**2))
    return kernel / np.sum(kernel)


def mscn(image: np.ndarray) -> np.ndarray:
    """MSCN coefficients, zero-padded at the borders.

    Computed exactly as the package does (same kernel arithmetic, ``convolve2d``): flat
    regions give coefficients that are zero up to rounding, and which side of zero they
    land on moves them between the left and right halves of the fit, so any other
    filter routine shifts the score by up to ~0.005.
    """
    kernel = _kernel()
    mean = convolve2d(image, kernel, "same")
    deviation = np.sqrt(np.abs(mean**2 - convolve2d(image**2, kernel, "same")))
    return (image - mean) / (deviation + MSCN_C)


def _shape_ratio(alpha: float) -> float:
    return float(np.exp(2 * gammaln(2 / alpha) - gammaln(1 / alpha) - gammaln(3 / alpha)))


def aggd_fit(values: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian by moment matching: (alpha, mean, left sigma, right sigma)."""
    values = values.ravel()
    left_squares = values[values < 0] ** 2
    right_squares = values[values >= 0] ** 2
    sigma_l = float(np.sqrt(left_squares.mean())) if left_squares.size else 0.0
    sigma_r = float(np.sqrt(right_squares.mean())) if right_squares.size else 0.0
    r_hat = float(np.mean(np.abs(values)) ** 2 / np.mean(values**2))
    g = sigma_l / sigma_r
    target = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    low, high = ALPHA_BRACKET
    if target <= _shape_ratio(low):
        alpha = low
    elif target >= _shape_ratio(high):
        alpha = high
    else:
        alpha = brentq(lambda a: _shape_ratio(a) - target, low, high, xtol=1e-12)
    constant = np.sqrt(np.exp(gammaln(1 / alpha) - gammaln(3 / alpha)))
    mean = (sigma_r - sigma_l) * constant * np.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
    return alpha, float(mean), sigma_l, sigma_r


def scale_features(image: np.ndarray) -> list[float]:
    """The 18 features of one scale: MSCN (shape, variance), then per neighbour product
    (shape, mean, left variance, right variance) for horizontal, vertical and both diagonals."""
    coefficients = mscn(image)
    alpha, _, sigma_l, sigma_r = aggd_fit(coefficients)
    features = [alpha, (sigma_l**2 + sigma_r**2) / 2]
    products = (
        coefficients[:, :-1] * coefficients[:, 1:],
        coefficients[:-1, :] * coefficients[1:, :],
        coefficients[:-1, :-1] * coefficients[1:, 1:],
        coefficients[1:, :-1] * coefficients[:-1, 1:],
    )
    for product in products:
        alpha, mean, sigma_l, sigma_r = aggd_fit(product)
        features += [alpha, mean, sigma_l**2, sigma_r**2]
    return features


def brisque(rgb: np.ndarray) -> float:
    """BRISQUE of an RGB image ``[H, W, 3]`` in ``[0, 1]`` (lower is better); ``nan`` below
    :data:`MIN_SIDE` px a side."""
    import cv2

    image = grey(rgb, BT709)
    if min(image.shape) < MIN_SIDE:
        return float("nan")
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    features = np.asarray(scale_features(image) + scale_features(half))
    model, minima, maxima = bundled_model()
    scaled = -1 + 2.0 / (maxima - minima) * (features - minima)
    from libsvm import svmutil

    nodes, _ = svmutil.gen_svm_nodearray([float(v) for v in scaled], isKernel=False)
    return float(svmutil.libsvm.svm_predict(model, nodes))
