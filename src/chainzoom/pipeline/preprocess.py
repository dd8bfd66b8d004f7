"""Preprocessing before the plan: the official square crop (``square``)."""

from __future__ import annotations

from chainzoom.core.geometry import Box
from chainzoom.core.resample import resize
from chainzoom.io.images import LoadedImage

#: Side of the square the official implementation zooms in (``square``).
OFFICIAL_SQUARE = 512


def square_crop(image: LoadedImage, side: int = OFFICIAL_SQUARE) -> LoadedImage:
    """The official preprocessing: the centred square of the image, resized to ``side`` (Lanczos)."""
    w, h = image.size
    s = min(w, h)
    box = Box((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    alpha = resize(image.alpha, (side, side), "lanczos", box) if image.alpha is not None else None
    return LoadedImage(resize(image.rgb, (side, side), "lanczos", box), alpha, image.bit_depth, image.path)
