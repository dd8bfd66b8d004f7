"""Resampling of float image tensors with Pillow's filters.

Pillow's ``"F"`` (32-bit float) mode resizes with proper antialiasing when
shrinking and accepts a floating-point source box, so one call crops an exact
sub-pixel region and resizes it: the baselines read the very same box as the chain.
It is also what the official implementation uses (PIL bicubic/nearest/lanczos).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from chainzoom.core.geometry import Box

METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize(image: torch.Tensor, size: tuple[int, int], method: str = "bicubic", box: Box | None = None) -> torch.Tensor:
    """Resize ``image`` ``[C,H,W]`` (or its ``box`` region, in its pixels) to ``size`` = (w, h).

    The result is clamped to ``[0, 1]`` because bicubic and Lanczos overshoot.
    """
    try:
        resample = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown resampling method {method!r} (known: {', '.join(METHODS)})") from None
    region = (box.x0, box.y0, box.x1, box.y1) if box is not None else None
    channels = [
        np.asarray(Image.fromarray(channel).resize(size, resample, box=region)) for channel in image.float().numpy()
    ]
    return torch.from_numpy(np.stack(channels)).clamp_(0.0, 1.0)
