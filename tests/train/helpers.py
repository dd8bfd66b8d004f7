"""Tiny stand-ins for the training tests: a VGG16-layout network and LPIPS heads, photos, a tiny SD3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from chainzoom.train.lpips import SLICE_ENDS, VGG16Features

TINY_WIDTHS = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)


def write_tiny_vgg(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A VGG16 with tiny widths saved as torchvision saves ``vgg16`` (``features.N.*``), and its heads."""
    torch.manual_seed(seed)
    features = VGG16Features(TINY_WIDTHS)
    vgg, heads = folder / "vgg16_tiny.pth", folder / "lpips_heads_tiny.pth"
    torch.save(features.state_dict(), vgg)
    widths = features.slice_widths
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, widths[i], 1, 1) for i in range(len(SLICE_ENDS))}, heads)
    return vgg, heads


def write_photos(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """Smooth random colour images (blurred noise, so there is structure to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"photo_{index:02d}.png")
    return folder
