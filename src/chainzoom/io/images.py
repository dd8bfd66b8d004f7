"""Images at the edge: files and PIL images in, ``float32 [C, H, W]`` tensors out, and back.

Inside chainzoom an image is an RGB ``torch.float32`` tensor ``[3, H, W]`` in ``[0, 1]``
plus, when the file had one, a separate ``[1, H, W]`` alpha channel. This module is the
only place that converts: every mode Pillow can open (grey, palette, CMYK, 1-bit,
16-bit …) is turned into that form here, and nowhere else.

Exactness. A state written to disk and read back must give back *exactly* the tensor
the chain went on with, or a resumed run would drift from an uninterrupted one. So
:func:`quantize` rounds a tensor onto the grid of integer samples a saved file holds,
and loading divides those integers back by the same constant with the same float32
operation: ``load(save(quantize(t))) == quantize(t)``, bit for bit, at 8 and 16 bits.

16-bit RGB(A) PNG. Pillow (up to 13 at least) has no 16-bit-per-channel colour mode: it
opens a 16-bit RGB or RGBA PNG as 8-bit ``RGB``/``RGBA``, keeping the high byte of every
sample, and cannot write one. Rather than add a PNG codec dependency (pure-Python
``pypng`` decodes about 40x slower than this), we let Pillow's own C decoder do the work
twice: its PNG tile names the raw sample layout (``"RGB;16B"``); decoding once as is gives
the high bytes, and once more with the layout read as little-endian (``"RGB;16L"``) gives
the low bytes; unfiltering and Adam7 interlacing are Pillow's, untouched. 16-bit grey +
alpha is decoded in one pass with the raw layout ``"RGBA"``, which hands over all four
bytes of each pixel. Writing a 16-bit PNG needs only ``zlib`` and numpy (:func:`_encode_png16`).
The tests check every sample of such files against an independent encoder, so a Pillow
that changes this tile layout is caught there, not by a user's resumed run.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from chainzoom.errors import ChainZoomError, InputError, one_line
from chainzoom.io.atomic import atomic_write
from chainzoom.io.marking import XMP_PNG_KEY, png_itxt

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "INPUT_SUFFIXES",
    "LoadedImage",
    "collect_inputs",
    "from_pil",
    "from_samples",
    "load_image",
    "quantize",
    "save_image",
    "save_pil",
    "to_pil",
    "to_samples",
]

DEFAULT_MAX_PIXELS: int = 200_000_000
"""Images with more pixels are refused unless the caller raises the limit (``--max-pixels N``).

A 200-megapixel RGB image is 2.4 GB as float32, already more than most machines want to
hold several copies of; beyond that a file is more likely a decompression bomb than a photo.
"""

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
#: What a folder scan picks up: everything we write, and GIF, which is read (first frame) but never written.
INPUT_SUFFIXES: frozenset[str] = IMAGE_SUFFIXES | {".gif"}
"""Suffixes a folder scan picks up (compared lowercase). Also the formats :func:`save_image` writes."""

_MAX_SAMPLE = {8: 255, 16: 65535}

# Pillow's own decompression-bomb check runs inside Image.open, before we can see the
# size; it is lifted for our opens (under this lock, restored right after) so that the
# caller's max_pixels is the only limit that applies. Only the header is read meanwhile.
_PILLOW_LIMIT_LOCK = threading.Lock()

# What Pillow may raise for a file that is not a readable image (rather than for a bug).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

# Raw layouts of 16-bit colour PNGs as Pillow's PNG plugin names them, and the layout
# that makes its decoder hand over the low bytes (see the module docstring).
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_PNG16_GREY_ALPHA = "LA;16B"

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass
class LoadedImage:
    """An input image in chainzoom's form.

    ``rgb`` is ``float32 [3, H, W]`` in ``[0, 1]``; ``alpha`` is ``float32 [1, H, W]`` in
    ``[0, 1]`` whenever the file has an alpha channel or a transparency key (kept even
    when fully opaque: what the file says it has, the outputs keep), else ``None``.
    ``bit_depth`` (8 or 16) is the precision of the source samples, so that outputs can
    be saved, and states quantized, at the precision the input deserves.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[-1]), int(self.rgb.shape[-2])


# --------------------------------------------------------------------------- loading


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage`.

    EXIF orientation is applied, alpha is kept, 16-bit samples keep their precision;
    of an animation or a multi-page file, the first frame is read. Every problem with
    the file (missing, a folder, empty, not an image, truncated, too large) raises
    an :class:`InputError` with a one-line message naming it. ``max_pixels=None``
    lifts the size limit.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file (a pipe, a device or a socket); save the image to a file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    with _opened(p, max_pixels) as image:
        return from_pil(image, path=p, max_pixels=max_pixels)


#: What the API takes as an image: a path, a PIL image, a :class:`LoadedImage` or a
#: ``[3,H,W]`` float tensor in ``[0,1]``.
ImageInput = str | Path | Image.Image | LoadedImage | torch.Tensor


def as_loaded(image: ImageInput, max_pixels: int | None = None) -> LoadedImage:
    """Any :data:`ImageInput` as a :class:`LoadedImage` (a path is decoded and checked)."""
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels=limit)
    if isinstance(image, Image.Image):
        return from_pil(image, max_pixels=limit)
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return LoadedImage(image.float().clamp(0, 1), None, 8, None)
    raise TypeError("image must be a path, a PIL image, a LoadedImage or a [3,H,W] tensor")


def from_pil(
    image: Image.Image, path: str | os.PathLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Convert a PIL image (of any mode) into a :class:`LoadedImage`.

    ``path`` is where it came from: it names the image in error messages and is kept
    on the result. A lazily opened (not yet loaded) 16-bit RGB(A) PNG is read at full
    precision when its file can be opened a second time (``image.filename`` or
    ``path``); an image already loaded has lost its low bytes and comes back at 8 bits.
    """
    where = Path(path) if path is not None else None
    name = str(where) if where is not None else (getattr(image, "filename", "") or "<image>")
    _check_size(name, image.size, max_pixels)

    layout = _png_layout(image)
    source = getattr(image, "filename", "") or where
    if layout in _PNG16_LOW_BYTES and not source:
        warnings.warn(f"{name}: 16-bit PNG without its file name; read at 8 bits", RuntimeWarning, stacklevel=2)
        layout = None

    if layout in _PNG16_LOW_BYTES:
        assert source  # a 16-bit PNG without a source had its layout dropped above
        _decode(name, image)
        with _opened(Path(source), max_pixels) as low:
            _set_layout(low, _PNG16_LOW_BYTES[layout])
            _decode(name, low)
            rgb, alpha = _png16_colour(_upright(name, image), _upright(name, low))
        bit_depth = 16
    elif layout == _PNG16_GREY_ALPHA:
        _set_layout(image, "RGBA")  # hands over all four bytes of each pixel, in one pass
        _decode(name, image)
        rgb, alpha = _png16_grey_alpha(_upright(name, image))
        bit_depth = 16
    else:
        _decode(name, image)
        rgb, alpha, bit_depth = _samples(name, _upright(name, image))
    alpha_t = None if alpha is None else from_samples(alpha, bit_depth)
    return LoadedImage(from_samples(rgb, bit_depth), alpha_t, bit_depth, where)


@contextmanager
def _opened(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """``Image.open`` with our size limit instead of Pillow's, its errors made one-line."""
    try:
        with _PILLOW_LIMIT_LOCK:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Image.DecompressionBombError as e:
        raise InputError(_too_large_message(str(path), None, max_pixels)) from e
    except Image.UnidentifiedImageError as e:
        raise InputError(f"{path}: not an image file (or a format Pillow cannot read)") from e
    except PermissionError as e:
        raise InputError(f"{path}: cannot read the file: permission denied") from e
    except _DECODE_ERRORS as e:
        raise InputError(f"{path}: image is truncated or corrupt ({one_line(e)})") from e
    try:
        yield image
    finally:
        image.close()


def _check_size(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse empty images and images above the limit, before any pixel is decoded."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(_too_large_message(name, size, max_pixels))


def _too_large_message(name: str, size: tuple[int, int] | None, max_pixels: int | None) -> str:
    limit = f"the limit of {max_pixels:,} pixels" if max_pixels is not None else "Pillow's decompression-bomb limit"
    what = f"is {size[0]}x{size[1]} ({size[0] * size[1]:,} pixels), above" if size else "has more pixels than"
    return f"{name}: image {what} {limit}; raise it with --max-pixels N if you trust this file"


def _decode(name: str, image: Image.Image) -> None:
    """Decode every pixel now: Pillow opens lazily, and a truncated file only fails here.

    (Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is respected: a program that set it
    asked for truncated files to load.)
    """
    try:
        image.load()
    except _DECODE_ERRORS as e:
        raise InputError(f"{name}: image is truncated or corrupt ({one_line(e)})") from e


def _upright(name: str, image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so pixels are what a viewer shows.

    A broken EXIF block is no reason to refuse a photo: it is ignored with a warning.
    """
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as e:
        warnings.warn(f"{name}: unreadable EXIF orientation ignored ({one_line(e)})", RuntimeWarning, stacklevel=3)
        return image


def _png_layout(image: Image.Image) -> str | None:
    """The raw sample layout of a not-yet-decoded PNG, as Pillow's tile names it (``"RGB;16B"``)."""
    tiles: Sequence[Any] = getattr(image, "tile", None) or ()
    if image.format != "PNG" or len(tiles) != 1:
        return None
    tile = tiles[0]
    if tile[0] != "zip" or not isinstance(tile[3], str):
        return None
    return tile[3]


def _set_layout(image: Image.Image, layout: str) -> None:
    """Make Pillow decode a PNG's samples with another raw layout (same bytes per pixel).

    The PNG filters look back one pixel, and Pillow derives that distance from the
    layout, so only a layout with the file's bytes per pixel decodes correctly.
    """
    image = cast(ImageFile.ImageFile, image)  # only a PNG not yet decoded reaches here
    tile = image.tile[0]
    # older Pillow keeps tiles as plain tuples, which its newer stubs no longer allow
    image.tile = [tile._replace(args=layout) if hasattr(tile, "_replace") else (*tile[:3], layout)]  # type: ignore[list-item]


def _png16_colour(high: Image.Image, low: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Join the high-byte and low-byte decodes of a 16-bit RGB(A) PNG."""
    samples = (np.asarray(high).astype(np.uint16) << 8) | np.asarray(low).astype(np.uint16)
    if samples.shape[-1] == 4:
        return samples[..., :3], samples[..., 3:]
    key = high.info.get("transparency")
    if isinstance(key, tuple) and len(key) == 3:  # tRNS: one 16-bit colour is transparent
        return samples, _key_alpha(samples, key, 65535)
    return samples, None


def _png16_grey_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit grey+alpha PNG decoded as raw bytes ``[L hi, L lo, A hi, A lo]``."""
    raw = np.asarray(image).astype(np.uint16)
    grey = (raw[..., 0:1] << 8) | raw[..., 1:2]
    alpha = (raw[..., 2:3] << 8) | raw[..., 3:4]
    return np.repeat(grey, 3, axis=-1), alpha


def _key_alpha(samples: np.ndarray, key: tuple[int, ...] | int, opaque: int) -> np.ndarray:
    """Alpha from a transparency key: the pixels equal to the key are transparent."""
    transparent = np.all(samples == np.asarray(key, dtype=samples.dtype), axis=-1, keepdims=True)
    return np.where(transparent, 0, opaque).astype(samples.dtype)


def _samples(name: str, image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Integer ``[H, W, 3]`` RGB and ``[H, W, 1]`` alpha (or None) for any decoded mode."""
    mode = image.mode
    key = image.info.get("transparency")
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(image)
        if grey.dtype.kind not in "ui" or (grey.size and (grey.min() < 0 or grey.max() > 65535)):
            raise InputError(f"{name}: {mode} pixels outside the 16-bit range are not supported")
        grey = grey.astype(np.uint16)[..., None]
        alpha = _key_alpha(grey, key, 65535) if isinstance(key, int) else None
        return np.repeat(grey, 3, axis=-1), alpha, 16
    if mode == "F":
        raise InputError(f"{name}: 32-bit float pixels are not supported; convert to 8- or 16-bit first")
    if mode in _ALPHA_MODES or key is not None or (mode == "P" and image.palette and image.palette.mode == "RGBA"):
        rgba = np.asarray(image.convert("RGBA"))  # Pillow applies palette alpha and keys
        return rgba[..., :3], rgba[..., 3:], 8
    return np.asarray(image if mode == "RGB" else image.convert("RGB")), None, 8


def from_samples(samples: np.ndarray, bit_depth: int = 8) -> torch.Tensor:
    """Integer ``[H, W, C]`` samples to ``float32 [C, H, W]``: the inverse of :func:`_to_int`.

    The division is the very one :func:`quantize` does, which is what makes a saved and
    reloaded state identical to the one kept in memory.
    """
    chw = np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw).div_(float(_MAX_SAMPLE[bit_depth]))


# --------------------------------------------------------------------------- saving


def quantize(t: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Round ``t`` onto the grid of values a ``bit_depth`` file holds (clamped to ``[0, 1]``).

    Saving a quantized tensor and loading it back gives exactly the same tensor, and
    ``quantize`` is idempotent: this is what lets an interrupted run resume bit-identically.
    The result is float32 on ``t``'s device.
    """
    return _grid(t, bit_depth).div_(float(_MAX_SAMPLE[bit_depth]))


def _grid(t: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Nearest integer sample values as float32 (round half to even, never truncation)."""
    if bit_depth not in _MAX_SAMPLE:
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth!r}")
    t = t.detach().to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("image has NaN or infinite values (did a model overflow in half precision?)")
    return torch.round(t.clamp(0.0, 1.0) * float(_MAX_SAMPLE[bit_depth]))


def _to_int(t: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Integer samples on the CPU, ready to be written: the inverse of :func:`from_samples`."""
    return _grid(t, bit_depth).to(device="cpu", dtype=torch.int32)


def to_samples(rgb: torch.Tensor, alpha: torch.Tensor | None = None, bit_depth: int = 8) -> np.ndarray:
    """``[H, W, 3 or 4]`` unsigned integer samples from chainzoom tensors, rounded as saved states are."""
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must be [3, H, W], got {list(rgb.shape)}")
    channels = [rgb]
    if alpha is not None:
        if alpha.dim() == 2:
            alpha = alpha.unsqueeze(0)
        if alpha.dim() != 3 or alpha.shape[0] != 1 or alpha.shape[1:] != rgb.shape[1:]:
            raise ValueError(f"alpha must be [1, H, W] matching rgb {list(rgb.shape)}, got {list(alpha.shape)}")
        channels.append(alpha)
    samples = torch.cat([_to_int(c, bit_depth) for c in channels]).permute(1, 2, 0)
    return samples.numpy().astype(np.uint8 if bit_depth == 8 else np.uint16)


def to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> Image.Image:
    """An 8-bit ``RGB`` (or ``RGBA`` with alpha) PIL image, samples rounded to nearest."""
    samples = to_samples(rgb, alpha, 8)
    return Image.fromarray(samples, "RGBA" if alpha is not None else "RGB")


def save_image(
    path: str | os.PathLike,
    rgb: torch.Tensor,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    xmp: bytes | None = None,
) -> None:
    """Write ``rgb`` (and ``alpha``) atomically; the format follows the suffix.

    ``xmp``: the provenance packet (:mod:`chainzoom.io.marking`) to embed: an ``iTXt`` chunk
    ``XML:com.adobe.xmp`` in a PNG (8- or 16-bit), the ``XMP`` chunk of a WebP, the XMP segment
    of a JPEG, tag 700 of a TIFF. BMP has no place for it (nothing is embedded).

    PNG is written at 8 or 16 bits; JPEG, WebP, TIFF and BMP at 8 bits. JPEG at quality 95
    without chroma subsampling, WebP lossless (lossy WebP always halves the colour
    resolution, which would undo part of a super-resolution). JPEG cannot store
    alpha: a transparent image is refused rather than silently flattened (a fully opaque
    alpha is dropped, it carries nothing). Samples are rounded as :func:`quantize` does.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if bit_depth not in _MAX_SAMPLE:
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth!r}")
    if suffix not in IMAGE_SUFFIXES:
        allowed = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ChainZoomError(f"{target}: cannot write images with suffix {suffix or '(none)'!r}; use one of {allowed}")
    if bit_depth == 16 and suffix != ".png":
        raise ChainZoomError(f"{target}: 16-bit output needs a .png file")
    if suffix in (".jpg", ".jpeg") and alpha is not None:
        if bool((_to_int(alpha, 8) < 255).any()):
            raise ChainZoomError(f"{target}: JPEG cannot store transparency; save as .png or .webp instead")
        alpha = None

    if bit_depth == 16:
        samples = to_samples(rgb, alpha, 16)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                _encode_png16(f, samples, xmp=xmp)

    else:
        image = to_pil(rgb, alpha)
        options: dict[str, Any] = {}
        if suffix in (".jpg", ".jpeg"):
            options = {"quality": 95, "subsampling": 0}
        elif suffix == ".webp":
            options = {"lossless": True, "exact": True}  # exact: keep colour under alpha 0
        if xmp is not None:
            options.update(_xmp_options(suffix, xmp))

        def write(tmp: Path) -> None:
            image.save(tmp, **options)

    atomic_write(target, write)  # a full disk becomes one line there


def save_pil(path: str | os.PathLike, image: Image.Image, xmp: bytes | None = None) -> Path:
    """Write a rendered PIL image (a strip, a panel) atomically, with ``xmp`` embedded as
    :func:`save_image` does; the format follows the suffix."""
    target = Path(path)
    options = _xmp_options(target.suffix.lower(), xmp) if xmp is not None else {}
    return atomic_write(target, lambda tmp: image.save(tmp, **options))


def _xmp_options(suffix: str, xmp: bytes) -> dict[str, Any]:
    """Pillow's save options that embed ``xmp`` in a file of this suffix (none for BMP)."""
    if suffix == ".png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt(XMP_PNG_KEY, xmp.decode("utf-8"), zip=False)
        return {"pnginfo": info}
    if suffix in (".jpg", ".jpeg", ".webp"):
        return {"xmp": xmp}
    if suffix in (".tif", ".tiff"):
        return {"tiffinfo": {700: xmp}}
    return {}


def _encode_png16(
    f: BinaryIO, samples: np.ndarray, rows_per_chunk: int = 256, level: int = 6, xmp: bytes | None = None
) -> None:
    """Write ``[H, W, 3 or 4]`` uint16 samples as a 16-bit RGB/RGBA PNG (Paeth filter).

    ``xmp`` goes in an ``iTXt`` chunk before the image data, where Pillow puts it too.

    Bands of rows are filtered and compressed in turn, so memory stays a few times one
    band however large the image; each band's compressed bytes become one IDAT chunk.
    """
    height, width, channels = samples.shape
    colour_type = {3: 2, 4: 6}[channels]
    bpp = channels * 2  # bytes per pixel, the distance the PNG filters look back

    def chunk(kind: bytes, data: bytes) -> None:
        f.write(struct.pack(">I", len(data)) + kind + data)
        f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    f.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if xmp is not None:
        f.write(png_itxt(xmp))
    compressor = zlib.compressobj(level)
    previous = np.zeros((1, width * bpp), dtype=np.int16)
    for top in range(0, height, rows_per_chunk):
        band = np.ascontiguousarray(samples[top : top + rows_per_chunk], dtype=">u2").view(np.uint8)
        band = band.reshape(-1, width * bpp)
        rows = band.astype(np.int16)
        above = np.concatenate([previous, rows[:-1]])
        left = np.zeros_like(rows)
        left[:, bpp:] = rows[:, :-bpp]
        upper_left = np.zeros_like(rows)
        upper_left[:, bpp:] = above[:, :-bpp]
        filtered = (rows - _paeth(left, above, upper_left)).astype(np.uint8)
        lines = np.concatenate([np.full((len(rows), 1), 4, dtype=np.uint8), filtered], axis=1)
        data = compressor.compress(lines.tobytes())
        if data:
            chunk(b"IDAT", data)
        previous = rows[-1:]
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor: whichever of left, above, upper-left is nearest a + b - c."""
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


# --------------------------------------------------------------------------- inputs


def collect_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files to process: files as given, folders scanned for images.

    A folder contributes its files whose suffix is in :data:`INPUT_SUFFIXES` (any case),
    sorted by name, **not recursively** (outputs are often written into subfolders of the
    input folder; recursing would pick them up again). Hidden files are skipped: they are
    editor or OS debris (``._photo.jpg``) or our own unfinished temporary files. A file
    named twice is kept once, at its first place. A missing path, a folder without
    images, or no paths at all raise :class:`InputError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise InputError("no input images given")
    found: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            images = sorted((c for c in p.iterdir() if _is_image_name(c) and c.is_file()), key=lambda c: c.name)
            if not images:
                raise InputError(f"{p}: folder has no images (looked for {', '.join(sorted(INPUT_SUFFIXES))})")
            found.extend(images)
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _is_image_name(path: Path) -> bool:
    """A folder entry worth loading: an image suffix, and not hidden (see :func:`collect_inputs`)."""
    return path.suffix.lower() in INPUT_SUFFIXES and not path.name.startswith(".")


def input_names(paths: Sequence[Path]) -> list[str]:
    """A folder name per input: its stem, or its whole name (dots as ``_``) where two stems clash."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in paths]
