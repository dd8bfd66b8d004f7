"""Each metric against the implementation it follows, on fixed images, and in the right direction.

Reference packages that no longer run on numpy 2 get their shims here, in the test
only: scikit-video needs ``np.int`` and ``scipy.misc.imresize`` (a PIL float resize,
what it was in scipy < 1.3); the brisque package's ``BRISQUE.score`` converts
one-element arrays with ``float()``, which numpy >= 2.4 refuses.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from chainzoom.core.geometry import Box
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.metrics import brisque_score, catalog, color, drift, fidelity, niqe, statistics

PHOTOS = ("assets/photos/astronaut.png", "assets/photos/coffee.png", "assets/photos/rocket.jpg")


def photo(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def as_float(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float64) / 255.0


def blurred(u8: np.ndarray, radius: float) -> np.ndarray:
    return as_float(np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius))))


def noisy(u8: np.ndarray, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.rint(u8 + rng.normal(0, sigma, u8.shape)), 0, 255) / 255.0


@pytest.fixture(scope="module")
def skvideo_niqe():
    pytest.importorskip("skvideo")
    import scipy
    import scipy.misc

    def imresize(array, size, interp="bilinear", mode=None):
        assert interp == "bicubic" and mode == "F"
        h, w = array.shape
        image = Image.fromarray(np.asarray(array, dtype=np.float32))
        return np.asarray(image.resize((int(w * size), int(h * size)), Image.BICUBIC))

    patches = [(np, "int", int), (scipy.misc, "imresize", imresize)]
    saved = [(obj, name, getattr(obj, name, None)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    import skvideo.measure

    yield skvideo.measure.niqe
    for obj, name, value in saved:
        if value is None:
            delattr(obj, name)
        else:
            setattr(obj, name, value)


@pytest.mark.parametrize("path", PHOTOS)
def test_niqe_matches_scikit_video(skvideo_niqe, path):
    rgb = as_float(photo(path))
    reference = float(skvideo_niqe(color.grey(rgb, color.BT601) * 255.0)[0])
    # scikit-video sums its AGGD moments in float32, we in float64: on some patches a shape
    # estimate lands one step (0.001) away on the lookup grid, moving the score by ~2e-5.
    assert niqe.niqe(rgb) == pytest.approx(reference, rel=1e-4)


def test_niqe_blur_is_less_natural():
    u8 = photo("assets/photos/coffee.png")
    sharp, soft, softer = niqe.niqe(as_float(u8)), niqe.niqe(blurred(u8, 2)), niqe.niqe(blurred(u8, 4))
    assert sharp < soft < softer


def test_niqe_needs_two_patches():
    assert math.isnan(niqe.niqe(np.full((191, 400, 3), 0.5)))
    assert math.isfinite(niqe.niqe(as_float(photo("assets/photos/astronaut.png"))[:192, :192]))


@pytest.fixture(scope="module")
def brisque_package():
    package = pytest.importorskip("brisque")

    class Reference(package.BRISQUE):
        def scale_features(self, features):
            return super().scale_features([np.ravel(f)[0] for f in features])

    return Reference(url=False)


@pytest.mark.parametrize("path", PHOTOS)
def test_brisque_matches_the_package(brisque_package, path):
    u8 = photo(path)
    # Grey conversions that differ in the last bit move flat-region MSCN coefficients across
    # zero; on these photos that is at most 0.001 of a 0..100 score.
    assert brisque_score.brisque(as_float(u8)) == pytest.approx(brisque_package.score(u8), abs=0.01)


def test_brisque_noise_scores_worse():
    u8 = photo("assets/photos/coffee.png")
    clean, noise, more_noise = (brisque_score.brisque(x) for x in (as_float(u8), noisy(u8, 10), noisy(u8, 25)))
    assert clean < noise < more_noise


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    u8 = photo("assets/photos/astronaut.png")[100:260, 150:330]
    reference, distorted = as_float(u8), noisy(u8, 12)
    expected = metrics.structural_similarity(
        distorted,
        reference,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=2,
    )
    assert fidelity.ssim(distorted, reference) == pytest.approx(expected, abs=1e-9)
    assert fidelity.ssim(reference, reference) == pytest.approx(1.0)
    assert fidelity.ssim(blurred(u8, 3), reference) < fidelity.ssim(blurred(u8, 1), reference) < 1.0


def test_psnr_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    u8 = photo("assets/photos/coffee.png")
    reference, distorted = as_float(u8), noisy(u8, 8)
    expected = metrics.peak_signal_noise_ratio(reference, distorted, data_range=1.0)
    assert fidelity.psnr(distorted, reference) == pytest.approx(expected, abs=1e-9)
    assert fidelity.psnr(reference, reference) == math.inf


def test_lab_matches_scikit_image():
    skcolor = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(1)
    samples = np.concatenate([rng.random((500, 3)), np.eye(3), [[0, 0, 0], [1, 1, 1], [0.01, 0.02, 0.03]]])
    # scikit-image rounds the CIE constants (6/29)**3 and (29/6)**2/3 to 0.008856 and 7.787;
    # we use the exact ones, so very dark colours differ by up to ~1e-4 in L*, a*, b*.
    np.testing.assert_allclose(color.srgb_to_lab(samples), skcolor.rgb2lab(samples[None])[0], atol=3e-4)
    # White is neutral (up to the 6-digit matrix of IEC 61966-2-1 against the 5-digit D65 white).
    assert color.srgb_to_lab(np.array([1.0, 1.0, 1.0])) == pytest.approx([100.0, 0.0, 0.0], abs=0.01)


def test_mean_color_shift_is_the_lab_distance_of_the_means():
    a = np.full((8, 8, 3), [0.2, 0.5, 0.7])
    b = np.full((8, 8, 3), [0.25, 0.5, 0.6])
    expected = np.linalg.norm(color.srgb_to_lab(a[0, 0]) - color.srgb_to_lab(b[0, 0]))
    assert color.mean_color_shift(a, b) == pytest.approx(expected)
    # Texture that averages out is not a colour shift.
    checker = np.indices((8, 8)).sum(axis=0)[..., None] % 2 * np.ones(3)
    assert color.mean_color_shift(checker, checker[::-1]) == pytest.approx(0.0, abs=1e-9)


def test_sharpness_matches_opencv_laplacian():
    cv2 = pytest.importorskip("cv2")
    rgb = as_float(photo("assets/photos/rocket.jpg"))
    expected = cv2.Laplacian(statistics.grey8(rgb).astype(np.float64), cv2.CV_64F).var()
    assert statistics.sharpness(rgb) == pytest.approx(expected, rel=1e-12)
    assert statistics.sharpness(blurred(photo("assets/photos/rocket.jpg"), 2)) < statistics.sharpness(rgb)


def test_entropy_matches_scikit_image():
    measure = pytest.importorskip("skimage.measure")
    rgb = as_float(photo("assets/photos/chelsea.png"))
    assert statistics.entropy(rgb) == pytest.approx(measure.shannon_entropy(statistics.grey8(rgb)), rel=1e-12)
    assert statistics.entropy(np.full((4, 4, 3), 0.3)) == 0.0


def test_pyiqa_metrics_are_reported_unavailable_without_pyiqa(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import pyiqa -> ImportError
    ready, missing = catalog.load_metrics(["niqe", "musiq", "maniqa", "clipiqa", "entropy"])
    assert [m.name for m in ready] == ["niqe", "entropy"]
    assert [m.name for m in missing] == ["musiq", "maniqa", "clipiqa"]
    assert all("pyiqa is not installed" in m.reason for m in missing)


def test_pyiqa_metric_that_cannot_load_its_weights_is_unavailable(monkeypatch):
    class FakePyiqa:
        @staticmethod
        def create_metric(name, **options):
            raise OSError(f"cannot download weights for {name}")

    monkeypatch.setitem(sys.modules, "pyiqa", FakePyiqa)
    ready, missing = catalog.load_metrics(["maniqa"])
    assert not ready
    assert missing[0].reason == "pyiqa could not load maniqa-pipal: cannot download weights for maniqa-pipal"


def test_metric_names_are_checked():
    assert catalog.parse_metric_names("all") == list(catalog.NO_REFERENCE)
    assert catalog.parse_metric_names("niqe, brisque") == ["niqe", "brisque"]
    with pytest.raises(catalog.ChainZoomError, match="unknown metric lpips"):
        catalog.parse_metric_names("niqe,lpips")


def test_drift_of_a_pure_colour_shift():
    """A state that only changed colour: PSNR is that of the offset, ΔE the Lab distance."""
    before = ScaleState(0, torch.full((3, 64, 64), 0.4), Box(0, 0, 64, 64), 1.0)
    shifted = torch.full((3, 64, 64), 0.4) + torch.tensor([0.1, 0.0, 0.0])[:, None, None]
    after = ScaleState(1, shifted, Box(24, 24, 40, 40), 4.0)
    (step,) = drift.chain_drift([before, after])
    assert step.magnification == 4.0
    assert step.psnr == pytest.approx(10 * math.log10(3 / 0.1**2), abs=1e-3)
    expected = np.linalg.norm(color.srgb_to_lab(np.array([0.5, 0.4, 0.4])) - color.srgb_to_lab(np.array([0.4] * 3)))
    assert step.delta_e == pytest.approx(expected, abs=1e-3)


def test_drift_compares_the_region_the_state_shows():
    photo_t = torch.from_numpy(as_float(photo("assets/photos/astronaut.png"))).permute(2, 0, 1).float()
    before = ScaleState(0, photo_t, Box(0, 0, 512, 512), 1.0)
    box = Box(192, 128, 320, 256)
    faithful = ScaleState(1, resize(photo_t, (512, 512), "bicubic", box), box, 4.0)
    elsewhere = ScaleState(1, resize(photo_t, (512, 512), "bicubic", Box(0, 0, 128, 128)), box, 4.0)
    good, bad = drift.step_drift(before, faithful), drift.step_drift(before, elsewhere)
    assert good.psnr > 35 and good.delta_e < 0.5
    assert bad.psnr < 20 and bad.delta_e > 2


def test_cumulative_drift_sees_a_cast_that_compounds():
    """Each step adds a small cast: per-step ΔE stays flat, ΔE against state 0 grows."""
    import torch

    from chainzoom.core.geometry import Box
    from chainzoom.core.states import ScaleState
    from chainzoom.metrics.drift import chain_drift, cumulative_delta_e

    base = torch.full((3, 32, 32), 0.5)
    states = [
        ScaleState(
            k,
            (base + torch.tensor([0.02 * k, 0.0, -0.02 * k]).view(3, 1, 1)).clamp(0, 1),
            Box(0, 0, 32 / 4**k, 32 / 4**k),
            4**k,
        )
        for k in range(5)
    ]
    per_step = [d.delta_e for d in chain_drift(states)]
    cumulative = [value for _, value in cumulative_delta_e(states)]
    assert max(per_step) - min(per_step) < 0.5 * min(per_step)
    assert all(b > a for a, b in zip(cumulative, cumulative[1:])) and cumulative[-1] > 3 * per_step[-1]
