"""The Real-ESRGAN degradation: kernel invariants, drawn parameters inside their ranges, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chainzoom.train import degradations as dg

SETTINGS = dg.RealESRGANSettings()


def hr(seed: int = 0, size: int = 96) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(40))
def test_every_drawn_kernel_sums_to_one_and_is_odd(seed):
    rng = np.random.default_rng(seed)
    for blur in (SETTINGS.first.blur, SETTINGS.second.blur):
        kernel, record = dg.draw_blur_kernel(rng, blur, SETTINGS.kernel_sizes)
        assert kernel.shape == (21, 21)
        assert record["size"] % 2 == 1 and record["size"] in SETTINGS.kernel_sizes
        assert kernel.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.isfinite(kernel).all()
        if record["kind"] != "sinc":
            assert (kernel >= 0).all()
            assert blur.sigma[0] <= record["sigma_x"] <= blur.sigma[1]
            assert blur.sigma[0] <= record["sigma_y"] <= blur.sigma[1]


def test_kernel_shapes():
    iso = dg.gaussian_kernel(21, 2.0, 2.0, 0.0)
    np.testing.assert_allclose(iso, iso.T, atol=1e-12)  # isotropic: symmetric
    aniso = dg.gaussian_kernel(21, 3.0, 0.5, 0.0)  # wide along x
    assert aniso[10, :].sum() > aniso[:, 10].sum()
    flat_top = dg.generalized_gaussian_kernel(21, 2, 2, 0, 4.0)  # beta > 1: flatter top than a Gaussian
    assert flat_top[10, 11] / flat_top[10, 10] > iso[10, 11] / iso[10, 10]
    plateau = dg.plateau_kernel(21, 2, 2, 0, 2.0)
    assert plateau.argmax() == 10 * 21 + 10
    sinc = dg.sinc_kernel(13, math.pi / 3, pad_to=21)
    assert sinc.shape == (21, 21) and sinc.sum() == pytest.approx(1.0) and sinc.min() < 0  # ringing lobes
    assert sinc[:4].sum() == 0  # zero padding


def test_noise_and_jpeg_parameters_within_their_ranges():
    kinds = set()
    for seed in range(30):
        record = dg.realesrgan(hr(seed), SETTINGS, np.random.default_rng(seed)).record
        for name, stage in (("first", SETTINGS.first), ("second", SETTINGS.second)):
            drawn = record[name]
            kinds.add(drawn["noise"])
            if drawn["noise"] == "gaussian":
                assert stage.noise_range[0] <= drawn["sigma"] <= stage.noise_range[1]
            else:
                assert stage.poisson_scale_range[0] <= drawn["scale"] <= stage.poisson_scale_range[1]
            if drawn["resize"] == "down":
                assert stage.resize_range[0] <= drawn["factor"] <= 1
            elif drawn["resize"] == "up":
                assert 1 <= drawn["factor"] <= stage.resize_range[1]
        assert 30 <= record["first"]["jpeg"] <= 95 and 30 <= record["final"]["jpeg"] <= 95
        assert record["final"]["order"] in ("resize_first", "jpeg_first")
    assert kinds == {"gaussian", "poisson"}


def test_output_is_the_lr_size_in_range_and_8_bit():
    out = dg.realesrgan(hr(1), SETTINGS, np.random.default_rng(1)).lr
    assert out.shape == (3, 24, 24) and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out * 255, (out * 255).round())


def test_same_seed_same_pair_other_seed_differs():
    first = dg.realesrgan(hr(), SETTINGS, np.random.default_rng(7))
    again = dg.realesrgan(hr(), SETTINGS, np.random.default_rng(7))
    assert torch.equal(first.lr, again.lr) and first.record == again.record
    other = dg.realesrgan(hr(), SETTINGS, np.random.default_rng(8))
    assert not torch.equal(first.lr, other.lr)


def test_gaussian_noise_level_and_gray_noise_is_shared_by_channels():
    flat = torch.full((3, 64, 64), 0.5)
    noisy = dg.add_gaussian_noise(flat, 20.0, gray=False, rng=np.random.default_rng(0)) - 0.5
    assert noisy.std().item() * 255 == pytest.approx(20.0, rel=0.05)
    gray = dg.add_gaussian_noise(flat, 20.0, gray=True, rng=np.random.default_rng(0))
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    poisson = dg.add_poisson_noise(hr(), 1.0, gray=True, rng=np.random.default_rng(0)) - hr()
    assert poisson.abs().mean() > 0


def test_jpeg_quality_matters():
    image = hr()
    low, high = dg.jpeg(image, 30), dg.jpeg(image, 95)
    assert (low - image).abs().mean() > (high - image).abs().mean() > 0


def test_too_small_or_off_scale_images_are_refused_by_name():
    with pytest.raises(ValueError, match="too small"):
        dg.realesrgan(hr(size=48), SETTINGS, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple of the scale"):
        dg.bicubic(hr(size=30))


def test_bicubic_is_deterministic_and_quarter_size():
    out = dg.degrade("bicubic", hr(), np.random.default_rng(0), SETTINGS)
    assert out.lr.shape == (3, 24, 24) and out.record == {"degradation": "bicubic", "scale": 4}
    assert torch.equal(out.lr, dg.degrade("bicubic", hr(), np.random.default_rng(5), SETTINGS).lr)
