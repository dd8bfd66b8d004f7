"""Full-image levels on disk: a raw working copy, and the pyramids made from it.

A level of a full-image run can be far larger than memory (a 2 MP photo at 16x is
512 MP), so it is never an array. While it is being made and while the next level
reads it, a level is a :class:`RawLevel`: a working file of 8-bit RGB rows that tiles
are written into and read back from at any position with ``pwrite``/``pread``,
losslessly and with memory proportional to the tile only. Once a level is complete,
libvips (pyvips, the ``[tiles]`` extra) streams that file, top to bottom, into the
deliverable: a tiled pyramidal BigTIFF, a Deep Zoom ``.dzi`` tree, or a PNG, so this
step's memory does not grow with the image either.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from chainzoom.core.vocabulary import FORMATS
from chainzoom.errors import ChainZoomError
from chainzoom.io.atomic import atomic_write

SUFFIXES = {"tiff": ".tif", "dzi": ".dzi", "png": ".png"}
#: Tile side of the pyramids: 256 for TIFF (what viewers and tifffile expect), and
#: 254 + 1 px overlap for Deep Zoom, whose 256 px centre tiles are the DZI default.
TIFF_TILE = 256
DZI_TILE = 254
DZI_OVERLAP = 1
JPEG_QUALITY = 90
#: Working folder for a ``.dzi`` being written: dzsave makes a file and a folder, which
#: are moved into place only once both are complete (the ``.dzi`` last).
PARTIAL = "partial"


def vips() -> Any:
    """pyvips, imported on first use with a message that says how to install it."""
    try:
        import pyvips
    except ImportError as exc:
        raise ChainZoomError(
            f"full-image mode needs pyvips ({exc}); install it with: pip install 'chainzoom[tiles]'"
        ) from None
    # Every operation here runs once over a file far larger than memory: libvips'
    # operation cache would only hold on to buffers of finished levels.
    pyvips.cache_set_max(0)
    return pyvips


class RawLevel:
    """An 8-bit RGB image of ``width`` x ``height`` stored as an uncompressed, stripped BigTIFF.

    The pixels are one contiguous run of rows after a fixed header, so a tile is
    written or read with ``pwrite``/``pread`` at computed offsets. It is a TIFF
    rather than headerless raw data because libvips maps a raw (or ``.v``) file
    whole into memory, which made peak RSS grow with the level (measured: 600 MiB
    for a 190 MP level); a stripped TIFF opened for sequential access is read
    strip by strip through libtiff instead (110 MiB for the same level).
    """

    BANDS = 3
    ROWS_PER_STRIP = 16

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path = Path(path)
        self.width = width
        self.height = height
        self.header = _tiff_header(width, height, self.BANDS, self.ROWS_PER_STRIP)

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.BANDS

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size == len(self.header) + self.nbytes

    def create(self) -> None:
        """An all-black image (sparse where the file system allows)."""
        with open(self.path, "wb") as handle:
            handle.write(self.header)
            handle.truncate(len(self.header) + self.nbytes)

    def write(self, x: int, y: int, pixels: np.ndarray) -> None:
        """Store ``pixels`` (``uint8 [h, w, 3]``) with its top-left corner at ``(x, y)``."""
        height, width = pixels.shape[:2]
        self._check(x, y, width, height)
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if x == 0 and width == self.width:
                os.pwrite(fd, data.tobytes(), self._offset(x, y))
            else:
                for row in range(height):
                    os.pwrite(fd, data[row].tobytes(), self._offset(x, y + row))
        finally:
            os.close(fd)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The ``uint8 [height, width, 3]`` region with its top-left corner at ``(x, y)``."""
        self._check(x, y, width, height)
        out = np.empty((height, width, self.BANDS), dtype=np.uint8)
        row_bytes = width * self.BANDS
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for row in range(height):
                data = os.pread(fd, row_bytes, self._offset(x, y + row))
                if len(data) != row_bytes:
                    raise ChainZoomError(f"{self.path} is truncated; rerun with --overwrite")
                out[row] = np.frombuffer(data, dtype=np.uint8).reshape(width, self.BANDS)
        finally:
            os.close(fd)
        return out

    def _offset(self, x: int, y: int) -> int:
        return len(self.header) + (y * self.width + x) * self.BANDS

    def _check(self, x: int, y: int, width: int, height: int) -> None:
        if x < 0 or y < 0 or x + width > self.width or y + height > self.height:
            raise ValueError(f"region {x},{y} {width}x{height} is outside {self.width}x{self.height}")


def _tiff_header(width: int, height: int, bands: int, rows_per_strip: int) -> bytes:
    """Header, one IFD and strip tables of a little-endian BigTIFF whose pixels follow contiguously."""
    strips = -(-height // rows_per_strip)
    row_bytes = width * bands
    entries = 10
    tables = 16 + 8 + entries * 20 + 8  # header, entry count, entries, next-IFD offset
    data = tables + 16 * strips
    offsets = struct.pack(f"<{strips}Q", *(data + i * rows_per_strip * row_bytes for i in range(strips)))
    counts = struct.pack(
        f"<{strips}Q", *(min(rows_per_strip, height - i * rows_per_strip) * row_bytes for i in range(strips))
    )
    short, long, long8 = 3, 4, 16
    fields = [  # (tag, type, count, value packed into the 8-byte slot), in tag order
        (256, long, 1, struct.pack("<I4x", width)),
        (257, long, 1, struct.pack("<I4x", height)),
        (258, short, 3, struct.pack("<3H2x", 8, 8, 8)),
        (259, short, 1, struct.pack("<H6x", 1)),  # no compression
        (262, short, 1, struct.pack("<H6x", 2)),  # RGB
        (273, long8, strips, struct.pack("<Q", tables)),
        (277, short, 1, struct.pack("<H6x", bands)),
        (278, long, 1, struct.pack("<I4x", rows_per_strip)),
        (279, long8, strips, struct.pack("<Q", tables + 8 * strips)),
        (284, short, 1, struct.pack("<H6x", 1)),  # interleaved RGB
    ]
    assert len(fields) == entries
    ifd = struct.pack("<Q", entries) + b"".join(struct.pack("<HHQ", t, k, n) + v for t, k, n, v in fields)
    header = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + ifd + struct.pack("<Q", 0)
    return header + offsets + counts


def level_path(folder: Path, index: int, fmt: str) -> Path:
    return Path(folder) / f"level_{index:02d}{SUFFIXES[fmt]}"


def dzi_files(path: Path) -> Path:
    """The tile folder of a ``.dzi`` file (``name_files`` next to ``name.dzi``)."""
    return path.with_name(path.stem + "_files")


def write_level(raw: RawLevel, target: Path, fmt: str, xmp: bytes | None = None) -> None:
    """Stream the finished ``raw`` level into ``target`` in format ``fmt`` (atomically).

    ``xmp``, the provenance packet, is set as the image's ``xmp-data``, which libvips writes
    as TIFF tag 700 and as the PNG ``iTXt`` chunk ``XML:com.adobe.xmp``; a ``.dzi`` descriptor
    has no place for it, but its JPEG tiles carry it (libvips 8.15 or later: dzsave's ``keep``).
    """
    if fmt not in FORMATS:
        raise ChainZoomError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    pyvips = vips()
    image = pyvips.Image.new_from_file(str(raw.path), access="sequential")
    if xmp is not None:
        image = image.copy()
        image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
    if fmt == "tiff":
        atomic_write(
            target,
            lambda tmp: image.tiffsave(
                str(tmp),
                tile=True,
                tile_width=TIFF_TILE,
                tile_height=TIFF_TILE,
                pyramid=True,
                compression="jpeg",
                Q=JPEG_QUALITY,
                bigtiff=True,
            ),
        )
    elif fmt == "png":
        atomic_write(target, lambda tmp: image.pngsave(str(tmp)))
    else:
        _write_dzi(image, Path(target), marked=xmp is not None and bool(pyvips.at_least_libvips(8, 15)))


def _write_dzi(image: Any, target: Path, marked: bool = False) -> None:
    """dzsave into a scratch folder, then move the tiles and finally the ``.dzi`` into place.

    ``marked``: every tile keeps the image's XMP (the provenance packet), about 1 kB a tile.
    """
    partial = target.parent / PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    base = partial / target.stem
    options: dict[str, Any] = {"keep": "xmp"} if marked else {}
    image.dzsave(
        str(base),
        tile_size=DZI_TILE,
        overlap=DZI_OVERLAP,
        suffix=f".jpg[Q={JPEG_QUALITY}]",
        depth="onepixel",
        **options,
    )
    files = dzi_files(target)
    shutil.rmtree(files, ignore_errors=True)
    os.replace(partial / f"{target.stem}_files", files)
    os.replace(partial / f"{target.stem}.dzi", target)
    shutil.rmtree(partial)


def remove_level(path: Path) -> None:
    """Remove a level file and, for a ``.dzi``, its tile folder."""
    path = Path(path)
    if path.suffix == ".dzi":
        shutil.rmtree(dzi_files(path), ignore_errors=True)
    path.unlink(missing_ok=True)
