"""The bundled models: ncnn files converted into torch give the ncnn runtime's output."""

from __future__ import annotations

import shutil

import pytest
import torch

from chainzoom.backbones import BACKBONES, create_backbone
from chainzoom.backbones.bundled.models import BUNDLED, rrdbnet_from_ncnn
from chainzoom.backbones.bundled.ncnn_runtime import NcnnModel
from chainzoom.errors import ChainZoomError, UnknownComponentError
from chainzoom.runtime import Runtime

pytestmark = pytest.mark.slow  # every test here runs the real bundled weights


@pytest.fixture(scope="module")
def photo_crop() -> torch.Tensor:
    from chainzoom.io.images import load_image

    return load_image("assets/sample.jpg").rgb[:, 120:168, 200:260].contiguous()


@pytest.mark.parametrize("model_id", ["realesrgan", "realsr"])
def test_torch_conversion_matches_the_ncnn_runtime(model_id, photo_crop):
    param, weights = BUNDLED[model_id].files()
    ours = create_backbone(model_id, Runtime(device="cpu", dtype="float32")).upscale(photo_crop)  # ncnn: float32
    reference = NcnnModel(param, weights)(photo_crop)
    assert ours.shape == (3, 48 * 4, 60 * 4)
    assert (ours - reference).abs().max().item() < 1e-3


def test_realesrgan_card_records_licence_and_hash():
    card = create_backbone("realesrgan").card()
    assert card.scale == 4 and not card.text_aware
    assert card.licence == "BSD-3-Clause"
    assert card.parameters == 16_697_987
    assert len(card.weights_sha256) == 64


def test_real_model_restores_sharpness_that_bicubic_loses():
    """A GAN SR model trades PSNR for detail: its edges must be as sharp as the original's."""
    from chainzoom.core.resample import resize
    from chainzoom.io.images import load_image

    original = load_image("assets/photos/coffee.png").rgb[:, 100:228, 200:328]
    small = resize(original, (32, 32), "bicubic")
    sr = create_backbone("realesrgan").upscale(small)
    bicubic = create_backbone("bicubic").upscale(small)

    def sharpness(a: torch.Tensor) -> float:
        return (a[:, 1:, :] - a[:, :-1, :]).abs().mean().item() + (a[:, :, 1:] - a[:, :, :-1]).abs().mean().item()

    assert sr.shape == original.shape
    assert abs(sharpness(sr) - sharpness(original)) < abs(sharpness(bicubic) - sharpness(original))
    assert (sr - original).abs().mean() < 0.1  # and it is still the same picture


def test_truncated_weights_are_refused(tmp_path):
    param, weights = BUNDLED["realesrgan"].files()
    shutil.copy(param, tmp_path / "m.param")
    (tmp_path / "m.bin").write_bytes(weights.read_bytes()[:1_000_000])
    with pytest.raises(ChainZoomError, match="truncated"):
        rrdbnet_from_ncnn(tmp_path / "m.param", tmp_path / "m.bin")


def test_not_an_ncnn_param_is_refused(tmp_path):
    (tmp_path / "m.param").write_text("hello\n")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ChainZoomError, match="not an ncnn"):
        rrdbnet_from_ncnn(tmp_path / "m.param", tmp_path / "m.bin")


def test_unknown_backbone_name_lists_the_known_ones():
    with pytest.raises(UnknownComponentError, match="realesrgan"):
        create_backbone("esrgan-9000")


@pytest.mark.parametrize("name", ["nearest", "bicubic", "lanczos"])
def test_interpolation_backbones_upscale_4x(name):
    image = torch.rand(3, 10, 12)
    out = BACKBONES.create(name).upscale(image)
    assert out.shape == (3, 40, 48) and out.min() >= 0 and out.max() <= 1
