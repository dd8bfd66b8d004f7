"""Deep Zoom tiles cut on request from a pyramidal TIFF, so ``--format tiff`` runs need no conversion.

A DZI level ``L`` is the image shrunk by ``2 ** (max_level - L)``; each tile is read
from the TIFF page (pyramid level) closest above that shrink, so a request touches
only a few of the file's own tiles whatever the image's size. Layout as libvips
``dzsave`` writes it: :data:`TILE` px tiles with :data:`OVERLAP` px shared on
interior sides, level 0 being 1x1 px. A file libvips cannot read (not a TIFF, cut short)
raises a one-line :class:`~chainzoom.errors.ChainZoomError`, which the server answers
as an error status rather than a dropped connection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chainzoom.errors import ChainZoomError
from chainzoom.runs.pyramid import DZI_OVERLAP, DZI_TILE, vips

TILE = DZI_TILE
OVERLAP = DZI_OVERLAP
JPEG_QUALITY = 85


class TiffDeepZoom:
    """One pyramidal TIFF, answering Deep Zoom descriptor and tile requests."""

    def __init__(self, path: Path) -> None:
        pyvips = vips()
        self.path = Path(path)
        self._pyvips = pyvips
        try:
            first = pyvips.Image.new_from_file(str(self.path), page=0)
            pages = first.get("n-pages") if first.get_typeof("n-pages") else 1
            self.pages = [first] + [pyvips.Image.new_from_file(str(self.path), page=p) for p in range(1, pages)]
        except pyvips.Error as exc:
            raise self._unreadable(exc) from None
        self.width, self.height = first.width, first.height
        self.max_level = math.ceil(math.log2(max(self.width, self.height))) if max(self.width, self.height) > 1 else 0

    def descriptor(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="jpg" Overlap="{OVERLAP}" TileSize="{TILE}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def level_size(self, level: int) -> tuple[int, int]:
        shrink = 2 ** (self.max_level - level)
        return math.ceil(self.width / shrink), math.ceil(self.height / shrink)

    def tile(self, level: int, col: int, row: int) -> bytes | None:
        """The JPEG bytes of one tile, or ``None`` when it is outside the image."""
        if not 0 <= level <= self.max_level:
            return None
        width, height = self.level_size(level)
        x0, y0 = col * TILE - (OVERLAP if col else 0), row * TILE - (OVERLAP if row else 0)
        if col < 0 or row < 0 or x0 >= width or y0 >= height:
            return None
        x1, y1 = min((col + 1) * TILE + OVERLAP, width), min((row + 1) * TILE + OVERLAP, height)
        try:
            return self._cut(level, x0, y0, x1, y1)
        except self._pyvips.Error as exc:  # libvips reads lazily: a file cut short once opened fails here
            raise self._unreadable(exc) from None

    def _cut(self, level: int, x0: int, y0: int, x1: int, y1: int) -> bytes:
        """The JPEG of the level's region ``x0, y0, x1, y1``, from the nearest page above it."""
        shrink = 2 ** (self.max_level - level)
        page = self._page(shrink)
        sx, sy = page.width / self.width, page.height / self.height
        # The tile's region in the page's pixels, widened to whole pixels, then resized to the tile.
        left, top = math.floor(x0 * shrink * sx), math.floor(y0 * shrink * sy)
        right = min(max(math.ceil(x1 * shrink * sx), left + 1), page.width)
        bottom = min(max(math.ceil(y1 * shrink * sy), top + 1), page.height)
        region = page.crop(left, top, right - left, bottom - top)
        region = region.resize((x1 - x0) / region.width, vscale=(y1 - y0) / region.height)
        if (region.width, region.height) != (x1 - x0, y1 - y0):
            region = region.crop(0, 0, min(region.width, x1 - x0), min(region.height, y1 - y0)).gravity(
                "north-west", x1 - x0, y1 - y0, extend="copy"
            )
        return region.jpegsave_buffer(Q=JPEG_QUALITY)

    def _unreadable(self, exc: Exception) -> ChainZoomError:
        """One line for a file libvips failed on: libvips' last line, its reason (the first says "unable to load")."""
        detail = getattr(exc, "detail", "").strip().splitlines()
        return ChainZoomError(f"{self.path.name} is not a readable TIFF ({detail[-1] if detail else exc})")

    def _page(self, shrink: int) -> Any:
        """The smallest page still at least as detailed as the image shrunk ``shrink`` times."""
        best = self.pages[0]
        for page in self.pages[1:]:
            if page.width * shrink >= self.width:
                best = page
        return best
