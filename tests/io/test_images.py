"""images.py: every file becomes the right float tensor, and states round-trip exactly.

All images are made here with Pillow/numpy. 16-bit colour PNGs, which Pillow can neither
write nor read at full precision, come from a small independent encoder in this file
(every PNG filter type, optional Adam7 interlacing), and our 16-bit writer is checked
with an independent decoder, so the two sides of the 16-bit code check each other
against the PNG specification rather than against themselves.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chainzoom.errors import ChainZoomError
from chainzoom.io import images
from chainzoom.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    LoadedImage,
    collect_inputs,
    from_pil,
    load_image,
    quantize,
    save_image,
    to_pil,
)

RNG = np.random.default_rng(1234)

# --------------------------------------------------------------------------- PNG by hand

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(
    samples: np.ndarray,
    bit_depth: int,
    filters=(0, 1, 2, 3, 4),
    interlace: bool = False,
    extra: bytes = b"",
    size: tuple[int, int] | None = None,
) -> bytes:
    """A PNG of ``[H, W, C]`` samples, rows filtered with ``filters`` in turn."""
    height, width, channels = samples.shape
    bpp = channels * bit_depth // 8

    def scanlines(img: np.ndarray) -> bytes:
        h, w, _ = img.shape
        if h == 0 or w == 0:
            return b""
        rows = np.frombuffer(img.astype(">u2" if bit_depth == 16 else "u1").tobytes(), np.uint8)
        rows = rows.reshape(h, -1).astype(np.int32)
        previous = np.zeros(rows.shape[1], np.int32)
        out = []
        for y, row in enumerate(rows):
            kind = filters[y % len(filters)]
            a = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
            c = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
            b = previous
            predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append(bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
            previous = row
        return b"".join(out)

    if interlace:
        raw = b"".join(scanlines(samples[y0::dy, x0::dx]) for x0, y0, dx, dy in ADAM7)
    else:
        raw = scanlines(samples)
    w, h = size if size is not None else (width, height)
    header = struct.pack(">IIBBBBB", w, h, bit_depth, COLOUR_TYPE[channels], 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + extra
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def decode_png16(data: bytes) -> np.ndarray:
    """Reference decoder for non-interlaced 16-bit PNGs, byte by byte as the spec says."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 16 and interlace == 0
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    bpp, stride = channels * 2, width * channels * 2
    previous = [0] * stride
    rows = []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        row = [0] * stride
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, int(_paeth(a, b, c))][kind]
            row[i] = (line[i] + pred) % 256
        rows.append(row)
        previous = row
    arr = np.array(rows, dtype=np.uint8).reshape(height, width, channels * 2)
    return (arr[..., 0::2].astype(np.uint16) << 8) | arr[..., 1::2]


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def as_hwc(t: torch.Tensor, bit_depth: int) -> np.ndarray:
    """Back to integer samples, asserting they sit exactly on the grid."""
    scaled = t.permute(1, 2, 0).numpy().astype(np.float64) * (255 if bit_depth == 8 else 65535)
    assert np.allclose(scaled, np.round(scaled), atol=1e-3)
    return np.round(scaled).astype(np.int64)


# --------------------------------------------------------------------------- loading


def test_rgb_png_loads_as_float_chw(tmp_path):
    arr = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.shape == (3, 5, 7)
    assert loaded.alpha is None and loaded.bit_depth == 8 and loaded.path == path
    assert loaded.size == (7, 5)
    assert torch.equal(loaded.rgb, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert loaded.rgb.min() >= 0.0 and loaded.rgb.max() <= 1.0


@pytest.mark.parametrize(
    "mode", ["L", "LA", "P", "P+tRNS", "CMYK", "RGBA", "1", "RGB+tRNS", "L+tRNS", "I;16", "I;16+tRNS"]
)
def test_every_mode_loads(tmp_path, mode):
    h, w = 4, 6
    grey = RNG.integers(0, 256, (h, w), dtype=np.uint8)
    path = tmp_path / "x.png"
    alpha = None
    bit_depth = 8
    if mode == "L":
        Image.fromarray(grey, "L").save(path)
        rgb = np.repeat(grey[..., None], 3, -1)
    elif mode == "LA":
        a = RNG.integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(np.stack([grey, a], -1), "LA").save(path)
        rgb, alpha = np.repeat(grey[..., None], 3, -1), a
    elif mode.startswith("P"):
        palette = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
        index = RNG.integers(0, 4, (h, w), dtype=np.uint8)
        index[0, 0] = 2
        image = Image.fromarray(index, "P")
        image.putpalette(palette.ravel().tolist())
        rgb = palette[index]
        if mode == "P+tRNS":
            image.save(path, transparency=2)
            alpha = np.where(index == 2, 0, 255)
        else:
            image.save(path)
    elif mode == "CMYK":
        path = tmp_path / "x.tif"
        cmyk = np.zeros((h, w, 4), np.uint8)
        cmyk[:, : w // 2, 0] = 255  # cyan
        cmyk[:, w // 2 :, 3] = 255  # black
        Image.fromarray(cmyk, "CMYK").save(path)
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:, : w // 2, 1:] = 255
    elif mode == "RGBA":
        rgba = RNG.integers(0, 256, (h, w, 4), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(path)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    elif mode == "1":
        bits = RNG.integers(0, 2, (h, w)).astype(bool)
        Image.fromarray(bits).convert("1").save(path)
        rgb = np.repeat(np.where(bits, 255, 0)[..., None], 3, -1)
    elif mode == "RGB+tRNS":
        arr = RNG.integers(0, 200, (h, w, 3), dtype=np.uint8)
        arr[1, 2] = (250, 251, 252)
        Image.fromarray(arr).save(path, transparency=(250, 251, 252))
        rgb, alpha = arr, np.where(np.all(arr == (250, 251, 252), -1), 0, 255)
    elif mode == "L+tRNS":
        grey[grey == 7] = 8
        grey[2, 3] = 7
        Image.fromarray(grey, "L").save(path, transparency=7)
        rgb, alpha = np.repeat(grey[..., None], 3, -1), np.where(grey == 7, 0, 255)
    else:  # 16-bit grey
        bit_depth = 16
        g16 = RNG.integers(0, 65536, (h, w), dtype=np.uint16)
        g16[0, 1] = 65535
        extra = b""
        if mode == "I;16+tRNS":
            g16[g16 == 4321] = 4322
            g16[3, 3] = 4321
            extra = _chunk(b"tRNS", struct.pack(">H", 4321))
            alpha = np.where(g16 == 4321, 0, 65535)
        path.write_bytes(encode_png(g16[..., None], 16, extra=extra))
        rgb = np.repeat(g16[..., None], 3, -1)

    loaded = load_image(path)
    assert loaded.bit_depth == bit_depth
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.shape == (3, h, w)
    assert np.array_equal(as_hwc(loaded.rgb, bit_depth), rgb)
    if alpha is None:
        assert loaded.alpha is None
    else:
        assert loaded.alpha is not None and loaded.alpha.shape == (1, h, w)
        assert loaded.alpha.dtype == torch.float32
        assert np.array_equal(as_hwc(loaded.alpha, bit_depth)[..., 0], alpha)


def test_opaque_alpha_is_kept(tmp_path):
    rgba = np.full((3, 4, 4), 255, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "o.png")
    loaded = load_image(tmp_path / "o.png")
    assert loaded.alpha is not None and torch.all(loaded.alpha == 1.0)


@pytest.mark.parametrize("channels", [3, 4, 2])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_colour_png_loads_at_full_precision(tmp_path, channels, interlace):
    samples = RNG.integers(0, 65536, (11, 13, channels), dtype=np.uint16)
    samples[0, 0] = 0x00FF  # low byte only: lost by an 8-bit read
    samples[0, 1] = 0xFF00
    path = tmp_path / "deep.png"
    path.write_bytes(encode_png(samples, 16, interlace=interlace))
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    if channels == 2:
        rgb, alpha = np.repeat(samples[..., :1], 3, -1), samples[..., 1]
    else:
        rgb, alpha = samples[..., :3], samples[..., 3] if channels == 4 else None
    assert np.array_equal(as_hwc(loaded.rgb, 16), rgb)
    if alpha is None:
        assert loaded.alpha is None
    else:
        assert np.array_equal(as_hwc(loaded.alpha, 16)[..., 0], alpha)


def test_16bit_rgb_transparency_key_becomes_alpha(tmp_path):
    samples = RNG.integers(0, 60000, (5, 6, 3), dtype=np.uint16)
    samples[2, 2] = (61000, 62000, 63000)
    path = tmp_path / "key16.png"
    path.write_bytes(encode_png(samples, 16, extra=_chunk(b"tRNS", struct.pack(">HHH", 61000, 62000, 63000))))
    loaded = load_image(path)
    assert loaded.alpha is not None
    expected = np.full((5, 6), 65535)
    expected[2, 2] = 0
    assert np.array_equal(as_hwc(loaded.alpha, 16)[..., 0], expected)


def test_from_pil_reads_16bit_png_from_its_file_and_warns_without_one(tmp_path):
    samples = RNG.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    data = encode_png(samples, 16)
    path = tmp_path / "deep.png"
    path.write_bytes(data)
    with Image.open(path) as image:
        loaded = from_pil(image)
    assert loaded.bit_depth == 16 and np.array_equal(as_hwc(loaded.rgb, 16), samples)
    import io

    with pytest.warns(RuntimeWarning, match="8 bits"):
        loaded = from_pil(Image.open(io.BytesIO(data)))
    assert loaded.bit_depth == 8 and np.array_equal(as_hwc(loaded.rgb, 8), samples >> 8)


def test_from_pil_converts_any_pil_image():
    image = Image.new("RGB", (3, 2), (255, 0, 51))
    loaded = from_pil(image, path="mem.png")
    assert loaded.path == Path("mem.png") and loaded.size == (3, 2)
    assert torch.equal(loaded.rgb[:, 0, 0], torch.tensor([1.0, 0.0, 51 / 255]))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)  # left half red
    arr[:, 16:] = (0, 0, 255)  # right half blue
    path = tmp_path / f"rot{suffix}"
    Image.fromarray(arr).save(path, exif=exif_orientation(6))  # 6: shown turned 90 degrees clockwise
    loaded = load_image(path)
    assert loaded.size == (16, 32)
    top, bottom = loaded.rgb[:, 4, 8], loaded.rgb[:, 28, 8]  # red goes to the top
    assert top[0] > 0.9 and top[2] < 0.1 and bottom[2] > 0.9 and bottom[0] < 0.1
    if suffix == ".png":
        assert np.array_equal(as_hwc(loaded.rgb, 8), np.rot90(arr, k=-1))


def test_exif_orientation_applies_to_16bit_png(tmp_path):
    samples = RNG.integers(0, 65536, (3, 5, 4), dtype=np.uint16)
    exif = exif_orientation(3).tobytes()  # 3: upside down
    exif = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    path = tmp_path / "rot16.png"
    path.write_bytes(encode_png(samples, 16, extra=_chunk(b"eXIf", exif)))
    loaded = load_image(path)
    expected = samples[::-1, ::-1]
    assert np.array_equal(as_hwc(loaded.rgb, 16), expected[..., :3])
    assert np.array_equal(as_hwc(loaded.alpha, 16), expected[..., 3:])


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(ChainZoomError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ChainZoomError, match="is a folder"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ChainZoomError, match=r"notes\.png: not an image"):
        load_image(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ChainZoomError, match=r"empty\.jpg: file is empty"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    arr = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(arr).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChainZoomError, match="truncated or corrupt") as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_zero_size_image(tmp_path):
    with pytest.raises(ChainZoomError, match=r"no pixels \(0x5\)"):
        from_pil(Image.new("RGB", (0, 5)))
    path = tmp_path / "zero.png"
    path.write_bytes(encode_png(np.zeros((5, 0, 3), np.uint8), 8))
    with pytest.raises(ChainZoomError, match=r"zero\.png"):
        load_image(path)


def test_above_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 10)).save(path)
    with pytest.raises(ChainZoomError) as info:
        load_image(path, max_pixels=199)
    message = str(info.value)
    assert "big.png" in message and "20x10" in message and "199" in message and "--max-pixels N" in message
    assert load_image(path, max_pixels=200).size == (20, 10)
    assert load_image(path, max_pixels=None).size == (20, 10)
    assert DEFAULT_MAX_PIXELS >= 100_000_000


def test_our_limit_governs_not_pillows(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 1600 > 2 * 100
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert load_image(path).size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


def test_decompression_bomb_error_becomes_our_message(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (4, 4)).save(path)

    def bomb(*args, **kwargs):
        raise Image.DecompressionBombError("Image size (999999999 pixels) exceeds limit")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(ChainZoomError, match=r"bomb\.png: .*limit of 200,000,000 pixels; raise it with --max-pixels N"):
        load_image(path)


# --------------------------------------------------------------------------- quantize / save


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_save_load_is_exact(tmp_path, bit_depth, with_alpha):
    rgb = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(bit_depth))
    rgb[0, 0, 0], rgb[1, 0, 0], rgb[2, 0, 0] = 0.0, 1.0, 0.5
    alpha = torch.rand(1, 9, 11) if with_alpha else None
    q_rgb = quantize(rgb, bit_depth)
    q_alpha = quantize(alpha, bit_depth) if with_alpha else None
    path = tmp_path / "state.png"
    save_image(path, q_rgb, q_alpha, bit_depth=bit_depth)
    loaded = load_image(path)
    assert loaded.bit_depth == bit_depth
    assert torch.equal(loaded.rgb, q_rgb)  # bit-identical: resume depends on it
    if with_alpha:
        assert torch.equal(loaded.alpha, q_alpha)
    else:
        assert loaded.alpha is None
    # Saving unquantized values writes the same file as saving quantized ones.
    save_image(tmp_path / "raw.png", rgb, alpha, bit_depth=bit_depth)
    assert torch.equal(load_image(tmp_path / "raw.png").rgb, q_rgb)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_load_save_keeps_every_sample(tmp_path, channels):
    samples = RNG.integers(0, 65536, (300, 3, channels), dtype=np.uint16)  # 300 rows: crosses a band
    src = tmp_path / "in.png"
    src.write_bytes(encode_png(samples, 16, interlace=True))
    loaded = load_image(src)
    out = tmp_path / "out.png"
    save_image(out, loaded.rgb, loaded.alpha, bit_depth=loaded.bit_depth)
    expected = samples if channels != 2 else np.concatenate([np.repeat(samples[..., :1], 3, -1), samples[..., 1:]], -1)
    assert np.array_equal(decode_png16(out.read_bytes()), expected)  # independent decoder
    with Image.open(out) as pil:  # Pillow reads our file too (at 8 bits)
        assert np.array_equal(np.asarray(pil), (expected >> 8).astype(np.uint8))
    again = load_image(out)
    assert torch.equal(again.rgb, loaded.rgb)
    assert (again.alpha is None) == (loaded.alpha is None)
    if again.alpha is not None:
        assert torch.equal(again.alpha, loaded.alpha)


def test_quantize_rounds_and_is_idempotent():
    t = torch.tensor([[[0.0, 0.4 / 255, 0.6 / 255, 100.5001 / 255, 1.0, 1.5, -0.2]]])
    q = quantize(t, 8)
    assert q.dtype == torch.float32
    assert torch.equal(q * 255, torch.tensor([[[0.0, 0.0, 1.0, 101.0, 255.0, 255.0, 0.0]]]))
    assert torch.equal(quantize(q, 8), q)
    t16 = torch.rand(3, 4, 5)
    assert torch.equal(quantize(quantize(t16, 16), 16), quantize(t16, 16))
    assert (quantize(t16, 16) - t16).abs().max() <= 0.5 / 65535 + 1e-7
    assert quantize(t16.double(), 16).dtype == torch.float32
    assert torch.equal(quantize(t16.to(torch.bfloat16), 8), quantize(t16.to(torch.bfloat16).float(), 8))
    with pytest.raises(ValueError):
        quantize(t16, 12)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.full((3, 1, 1), float("nan")), 8)


def test_to_pil_rounds_not_truncates():
    rgb = torch.full((3, 2, 2), 100.7 / 255)
    image = to_pil(rgb)
    assert image.mode == "RGB" and image.size == (2, 2)
    assert np.asarray(image)[0, 0].tolist() == [101, 101, 101]
    rgba = to_pil(rgb, torch.full((1, 2, 2), 0.2))
    assert rgba.mode == "RGBA" and np.asarray(rgba)[0, 0, 3] == 51
    with pytest.raises(ValueError):
        to_pil(torch.zeros(4, 2, 2))
    with pytest.raises(ValueError):
        to_pil(rgb, torch.zeros(1, 3, 3))


@pytest.mark.parametrize("suffix", [".tif", ".bmp", ".webp", ".jpg", ".JPEG"])
def test_other_formats_are_written(tmp_path, suffix):
    rgb = quantize(torch.rand(3, 8, 8), 8)
    path = tmp_path / f"out{suffix}"
    save_image(path, rgb)
    loaded = load_image(path)
    assert loaded.rgb.shape == (3, 8, 8)
    if suffix in (".tif", ".bmp", ".webp"):  # WebP is written lossless
        assert torch.equal(loaded.rgb, rgb)
    else:  # JPEG at quality 95, 4:4:4: close even on noise
        assert (loaded.rgb - rgb).abs().mean() < 0.03


def test_alpha_is_kept_by_formats_that_can(tmp_path):
    rgb, alpha = quantize(torch.rand(3, 4, 4), 8), quantize(torch.rand(1, 4, 4), 8)
    alpha[0, 0, :2] = 0.0  # colour under transparent pixels is kept too
    for name in ["a.tif", "a.webp", "a.png"]:
        save_image(tmp_path / name, rgb, alpha)
        loaded = load_image(tmp_path / name)
        assert torch.equal(loaded.rgb, rgb) and torch.equal(loaded.alpha, alpha), name


def test_jpeg_refuses_transparency_but_drops_an_opaque_alpha(tmp_path):
    rgb = torch.rand(3, 4, 4)
    with pytest.raises(ChainZoomError, match=r"t\.jpg: JPEG cannot store transparency"):
        save_image(tmp_path / "t.jpg", rgb, torch.full((1, 4, 4), 0.5))
    assert list(tmp_path.iterdir()) == []
    save_image(tmp_path / "o.jpg", rgb, torch.ones(1, 4, 4))
    assert load_image(tmp_path / "o.jpg").alpha is None


def test_bad_targets_are_refused(tmp_path):
    rgb = torch.rand(3, 4, 4)
    with pytest.raises(ChainZoomError, match="16-bit output needs a .png"):
        save_image(tmp_path / "x.jpg", rgb, bit_depth=16)
    with pytest.raises(ChainZoomError, match="cannot write images with suffix '.xyz'"):
        save_image(tmp_path / "x.xyz", rgb)
    with pytest.raises(ValueError):
        save_image(tmp_path / "x.png", rgb, bit_depth=10)
    with pytest.raises(ValueError):
        save_image(tmp_path / "x.png", rgb[None])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_failed_save_leaves_no_temp_file_and_keeps_the_old_one(tmp_path, monkeypatch, bit_depth):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def half_write(self_or_file, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial") if isinstance(fp, (str, Path)) else fp.write(b"partial")
        raise OSError("No space left on device")

    if bit_depth == 8:
        monkeypatch.setattr(Image.Image, "save", half_write)
    else:
        monkeypatch.setattr(images, "_encode_png16", lambda f, samples, **_: half_write(None, f))
    with pytest.raises(ChainZoomError, match=r"cannot write .*keep\.png: No space left"):
        save_image(target, torch.rand(3, 4, 4), bit_depth=bit_depth)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert target.read_bytes() == b"old"


def test_save_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "s.png"
    save_image(path, torch.zeros(3, 2, 2))
    assert load_image(path).size == (2, 2)


# --------------------------------------------------------------------------- inputs


def _touch_image(path: Path) -> Path:
    Image.new("RGB", (2, 2)).save(path, format="PNG")
    return path


def test_collect_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "d.TIFF"]:
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"x")
    single = _touch_image(tmp_path / "single.bmp")
    other = tmp_path / "given.dat"  # a file named explicitly is taken as given
    other.write_bytes(b"x")
    found = collect_inputs([single, str(folder), other, folder / "b.png"])
    assert found == [single, folder / "a.JPG", folder / "b.png", folder / "c.webp", folder / "d.TIFF", other]
    assert collect_inputs(str(single)) == [single]


def test_collect_inputs_errors(tmp_path):
    with pytest.raises(ChainZoomError, match="no such file or folder"):
        collect_inputs([tmp_path / "missing.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(ChainZoomError, match=r"empty: folder has no images \(looked for .bmp"):
        collect_inputs([empty])
    with pytest.raises(ChainZoomError, match="no input images"):
        collect_inputs([])


def test_suffixes():
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} == IMAGE_SUFFIXES
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)
