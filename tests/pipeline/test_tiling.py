"""Tiled upscaling: seams are invisible, memory-driven tile choice, OOM retry."""

from __future__ import annotations

import pytest
import torch

from chainzoom.backbones import create_backbone
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import load_image
from chainzoom.pipeline.tiling import TiledBackbone, auto_tile, tile_starts, upscale_tiled
from chainzoom.runtime import Runtime


def test_tile_starts_cover_the_length_with_the_overlap():
    assert tile_starts(100, 200, 10) == [0]
    starts = tile_starts(176, 140, 104)
    assert starts == [0, 36]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))


@pytest.mark.slow
def test_tiled_real_model_matches_untiled_within_one_level():
    """On the real model, a tiled run differs from the untiled one by < 1/255 everywhere."""
    image = load_image("assets/photos/coffee.png").rgb[:, 100:164, 150:326].contiguous()
    backbone = create_backbone("realesrgan", Runtime(device="cpu", dtype="float32"))  # the tiler, not bf16
    whole = backbone.upscale(image)
    tiled = upscale_tiled(backbone.upscale, image, 4, tile=140, overlap=104)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() < 1 / 255


class Doubler(Backbone):
    """A 2x 'model' whose output depends on position only: any seam error would show."""

    scale = 2

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def upscale(self, image, prompt=""):
        self.calls.append(tuple(image.shape[-2:]))
        return image.repeat_interleave(2, -1).repeat_interleave(2, -2)

    def card(self):
        return ModelCard("doubler", "test", "none", 2)


def test_tiles_blend_to_the_exact_untiled_result_for_a_local_model():
    image = torch.rand(3, 70, 90)
    model = Doubler()
    out = upscale_tiled(model.upscale, image, 2, tile=32, overlap=12)
    assert torch.allclose(out, model.upscale(image), atol=1e-6)
    assert all(h <= 32 and w <= 32 for h, w in model.calls[:-1])


def test_auto_tile_is_none_when_the_image_fits():
    assert auto_tile(256 * 256, free_bytes=64 << 30) is None
    tile = auto_tile(4096 * 4096, free_bytes=1 << 30)
    assert tile is not None and tile % 32 == 0 and tile * tile * 18 * 1024 <= (1 << 30) // 2


def test_out_of_memory_halves_the_tile_and_retries():
    class Fragile(Doubler):
        def upscale(self, image, prompt=""):
            if max(image.shape[-2:]) > 64:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().upscale(image, prompt)

    image = torch.rand(3, 100, 120)
    tiled = TiledBackbone(Fragile(), tile=256, overlap=16)
    out = tiled.upscale(image)
    assert torch.allclose(out, Doubler().upscale(image), atol=1e-6)


def test_bad_tile_settings_are_refused():
    with pytest.raises(ChainZoomError, match="^tile: must be at least 32"):
        TiledBackbone(Doubler(), tile=8)
    with pytest.raises(ChainZoomError, match="^tile_overlap"):
        upscale_tiled(Doubler().upscale, torch.rand(3, 64, 64), 2, tile=32, overlap=40)
