"""LPIPS without torchvision: loads a VGG16-layout file, is a distance, and gives gradients."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from chainzoom.errors import ChainZoomError
from chainzoom.train.lpips import VGG16Features, load_lpips, packaged_heads

from .helpers import TINY_WIDTHS, write_tiny_vgg


def images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_distance_zero_on_equal_images_positive_otherwise_with_gradients(tmp_path):
    vgg, heads = write_tiny_vgg(tmp_path)
    lpips = load_lpips(vgg, heads)
    a, b = images(0), images(1)
    assert torch.allclose(lpips(a, a), torch.zeros(2), atol=1e-6)
    distance = lpips(a, b)
    assert distance.shape == (2,) and (distance > 0).all()
    noisy = a + 0.05 * torch.randn_like(a)
    assert (lpips(a, noisy) < distance).all()  # a little noise is nearer than another image
    b.requires_grad_(True)
    lpips(a, b).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())  # the loss network is frozen


def test_the_layout_is_torchvisions_vgg16():
    names = list(VGG16Features((64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)).state_dict())
    assert names[:4] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert names[-2:] == ["features.28.weight", "features.28.bias"] and len(names) == 26


def test_missing_or_wrong_files_are_one_line_errors(tmp_path):
    with pytest.raises(ChainZoomError, match="needs VGG16 weights"):
        load_lpips(None)
    with pytest.raises(ChainZoomError, match="does not exist"):
        load_lpips(tmp_path / "nope.pth")
    vgg, heads = write_tiny_vgg(tmp_path)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ChainZoomError, match="not a torchvision VGG16"):
        load_lpips(tmp_path / "other.pth", heads)
    with pytest.raises(ChainZoomError, match="lacks lin0"):
        load_lpips(vgg, tmp_path / "other.pth")


def test_the_lpips_packages_heads_fit_the_real_vgg16():
    if importlib.util.find_spec("lpips") is None:  # found, not imported (it imports torchvision)
        pytest.skip("lpips is not installed (pip install --no-deps lpips==0.1.4)")
    heads = torch.load(packaged_heads(), map_location="cpu", weights_only=True)
    widths = VGG16Features((64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)).slice_widths
    assert [heads[f"lin{i}.model.1.weight"].shape[1] for i in range(5)] == list(widths)
    assert VGG16Features(TINY_WIDTHS).slice_widths == (4, 6, 8, 8, 8)
