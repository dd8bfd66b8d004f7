"""Wavelet and AdaIN colour fixes: what each keeps from the output and takes from the reference."""

from __future__ import annotations

import pytest
import torch

from chainzoom.core.colorfix import color_fix, wavelet_decomposition


def smooth_reference(size: int = 96) -> torch.Tensor:
    """Slow colour gradients: all low frequency, values well inside [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.3 + 0.3 * x, 0.4 + 0.2 * y, 0.5 - 0.2 * x * y])


def checkerboard(size: int = 96, amplitude: float = 0.05) -> torch.Tensor:
    """One-pixel detail: all high frequency, zero mean."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((x + y) % 2 * 2 - 1).float().expand(3, size, size) * amplitude


def test_wavelet_bands_add_up_to_the_image():
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    high, low = wavelet_decomposition(image)
    torch.testing.assert_close(high + low, image)


def test_wavelet_takes_low_frequencies_from_the_reference_and_keeps_the_detail():
    reference = smooth_reference()
    shifted = torch.stack([reference[0] + 0.15, reference[1] - 0.1, reference[2] * 0.8])
    output = shifted + checkerboard()
    fixed = color_fix(output, reference, "wavelet")
    lows = [wavelet_decomposition(image)[1] for image in (output, fixed, reference)]
    assert (lows[0] - lows[2]).abs().mean() > 0.1  # the colour shift to remove
    assert (lows[1] - lows[2]).abs().max() < 5e-3  # removed (the bands overlap a little)
    assert (fixed - reference - checkerboard())[:, 8:-8, 8:-8].abs().max() < 5e-3


def test_adain_matches_the_reference_channel_mean_and_std():
    reference = smooth_reference()
    output = 0.5 * smooth_reference().flip(-1) + 0.2 + checkerboard()
    fixed = color_fix(output, reference, "adain")
    flat_fixed, flat_reference = fixed.reshape(3, -1), reference.reshape(3, -1)
    torch.testing.assert_close(flat_fixed.mean(1), flat_reference.mean(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat_fixed.std(1), flat_reference.std(1), atol=1e-3, rtol=0)


def test_none_only_clamps_and_bad_requests_raise():
    output = torch.tensor([-0.5, 0.5, 1.5]).view(3, 1, 1).expand(3, 4, 4)
    assert torch.equal(color_fix(output, output, "none"), output.clamp(0, 1))
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(output, output, "histogram")
    with pytest.raises(ValueError, match="one size"):
        color_fix(output, output[:, :2], "adain")
