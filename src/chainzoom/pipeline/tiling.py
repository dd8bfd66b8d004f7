"""Seamless tiled upscaling for any backbone, with automatic tile size and OOM retry.

Inputs larger than a tile are cut into overlapping tiles; each tile is upscaled on
its own and the results are blended with weights that ramp linearly across the
overlap, so no tile edge is ever visible (Real-ESRGAN pastes tiles without blending
and shows seams; chaiNNer blends, which we follow). When no tile size is given, the
largest tile that fits in half the free memory is used, and a device out-of-memory
error halves the tile and retries instead of failing the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.errors import OptionError, OutOfMemoryError
from chainzoom.registry import RRDBNET_BYTES_PER_INPUT_PIXEL
from chainzoom.runtime import DEFAULT_OVERLAP, MIN_TILE

#: Width, in output pixels, of the blended band in the middle of each overlap.
FEATHER = 16


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_weights(length: int, shared_start: int, shared_end: int, feather: int) -> torch.Tensor:
    """1-D tile weights: each neighbour owns the half of the shared band nearer to it.

    The part of the shared band next to a tile's own edge is context only (weight 0):
    CNN outputs near a cut edge differ from the uncut image (measured for RRDBNet: up
    to 20/255 within 32 input px of the edge, under 1/255 past 48). Only a ``feather``
    wide band in the middle of the shared band is blended, linearly.
    """
    weight = torch.ones(length)
    for shared, flip in ((shared_start, False), (shared_end, True)):
        if not shared:
            continue
        band = min(feather, shared)
        skip = (shared - band) // 2
        ramp = torch.zeros(shared)
        ramp[skip : skip + band] = (torch.arange(band) + 0.5) / band
        ramp[skip + band :] = 1.0
        if flip:
            weight[length - shared :] = torch.minimum(weight[length - shared :], ramp.flip(0))
        else:
            weight[:shared] = torch.minimum(weight[:shared], ramp)
    return weight


def upscale_tiled(
    upscale: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
) -> torch.Tensor:
    """Upscale ``image`` ``[C,H,W]`` tile by tile and blend the tiles without seams."""
    if overlap >= tile:
        raise OptionError("tile_overlap", f"({overlap}) must be smaller than the tile ({tile})")
    channels, height, width = image.shape
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = torch.zeros(channels, height * scale, width * scale)
    total = torch.zeros(1, height * scale, width * scale)
    for iy, y in enumerate(ys):
        th = min(tile, height)
        wy = axis_weights(ys, iy, th, scale)
        for ix, x in enumerate(xs):
            tw = min(tile, width)
            wx = axis_weights(xs, ix, tw, scale)
            result = upscale(image[:, y : y + th, x : x + tw].contiguous())
            weight = wy[:, None] * wx[None, :]
            region = (slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[region] += result * weight
            total[region] += weight
    return out / total


def axis_weights(starts: list[int], index: int, size: int, scale: int) -> torch.Tensor:
    """The output-pixel weights of tile ``index`` along one axis."""
    before = shared_pixels(starts, index, size, before=True) * scale
    after = shared_pixels(starts, index, size, before=False) * scale
    return tile_weights(size * scale, before, after, FEATHER)


def shared_pixels(starts: list[int], index: int, size: int, before: bool) -> int:
    """How many pixels tile ``index`` shares with its neighbour before/after it."""
    if before:
        return 0 if index == 0 else starts[index - 1] + size - starts[index]
    return 0 if index == len(starts) - 1 else starts[index] + size - starts[index + 1]


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's own count, else the OS's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_tile(image_pixels: int, free_bytes: int, bytes_per_pixel: int = RRDBNET_BYTES_PER_INPUT_PIXEL) -> int | None:
    """``None`` when the whole input fits in half the free memory, else the largest tile that does."""
    budget = free_bytes // 2
    if image_pixels * bytes_per_pixel <= budget:
        return None
    side = int((budget / bytes_per_pixel) ** 0.5)
    return max(MIN_TILE, side - side % MIN_TILE)


class TiledBackbone(Backbone):
    """Any backbone, run tile by tile when its input is larger than the tile size.

    ``tile=None`` chooses from free memory per call, budgeting ``bytes_per_pixel`` of
    working memory per input pixel (the backbone's registry fact). A CUDA/MPS
    out-of-memory error halves the tile and retries down to :data:`MIN_TILE`.

    The tiler changes how :meth:`upscale` runs, not what the model is: :attr:`wrapped`
    (also ``inner``) is the backbone it runs, so a caller that needs a capability of the
    model (:func:`chainzoom.backbones.base.restorer_of`) finds it through the tiler.
    """

    def __init__(
        self,
        inner: Backbone,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        device: str = "cpu",
        bytes_per_pixel: int = RRDBNET_BYTES_PER_INPUT_PIXEL,
    ) -> None:
        if tile is not None and tile < MIN_TILE:
            raise OptionError("tile", f"must be at least {MIN_TILE}, got {tile}")
        if overlap < 0:
            raise OptionError("tile_overlap", f"must be at least 0, got {overlap}")
        self.inner = inner
        self.bytes_per_pixel = bytes_per_pixel
        self.tile = tile
        self.overlap = overlap
        self.device = torch.device(device)
        self.scale = inner.scale
        self.text_aware = inner.text_aware

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        height, width = image.shape[-2:]
        tile = self.tile or auto_tile(height * width, free_memory_bytes(self.device), self.bytes_per_pixel)
        while True:
            try:
                if tile is None or (height <= tile and width <= tile):
                    return self.inner.upscale(image, prompt)
                return upscale_tiled(
                    lambda part: self.inner.upscale(part, prompt), image, self.scale, tile, self.overlap
                )
            except torch.OutOfMemoryError:
                tile = (tile or max(height, width)) // 2
                if tile < MIN_TILE:
                    raise OutOfMemoryError("out of memory even with the smallest tile; try device cpu") from None
                tile = max(tile, self.overlap + 1)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @property
    def wrapped(self) -> Backbone:
        """The backbone this tiler runs (the same object as ``inner``)."""
        return self.inner

    def card(self) -> ModelCard:
        return self.inner.card()

    def settings(self) -> dict[str, Any]:
        """The wrapped backbone's settings, if it has any, and the tiling."""
        inner = getattr(self.inner, "settings", None)
        return {**(inner() if callable(inner) else {}), "tile": self.tile, "tile_overlap": self.overlap}
