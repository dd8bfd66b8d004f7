"""The provenance packet and the writers that embed it (chainzoom.io.marking)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image

from chainzoom import __version__
from chainzoom.io.images import load_image, save_image
from chainzoom.io.marking import (
    ALGORITHMICALLY_ENHANCED,
    TRAINED_ALGORITHMIC_MEDIA,
    XMP_PNG_KEY,
    Marking,
    source_type,
    webp_with_xmp,
)

IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
TOOL = "{http://ns.adobe.com/xap/1.0/}CreatorTool"
LI = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"
MARK = Marking("ab" * 32, 16.0, "realesrgan", "fixed:a cat", TRAINED_ALGORITHMIC_MEDIA, 'a "cat" <on> & mat\x01')


def fields(xmp: bytes | str) -> dict[str, str | None]:
    """The packet's source type, tool and description, parsed as XML."""
    text = xmp.decode() if isinstance(xmp, bytes) else xmp
    root = ET.fromstring(text[text.index("<x:xmpmeta") : text.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    found = {name: root.find(f".//{tag}") for name, tag in (("type", IPTC), ("tool", TOOL), ("description", LI))}
    return {k: (v.text if v is not None else None) for k, v in found.items()}


def test_the_packet_is_xml_with_the_source_type_tool_and_description():
    got = fields(MARK.xmp())
    assert got["type"] == TRAINED_ALGORITHMIC_MEDIA
    assert got["tool"] == f"chainzoom {__version__}"
    description = got["description"] or ""
    for part in ("x16", "ab" * 32, "backbone realesrgan", "prompter fixed:a cat", 'a "cat" <on> & mat'):
        assert part in description


def test_state_0_names_no_source_type():
    got = fields(Marking("00" * 32, 1.0, "realesrgan", "null", None).xmp())
    assert got["type"] is None
    assert "no detail generated" in (got["description"] or "")


def test_source_types_by_backbone():
    assert source_type("realesrgan", True) == TRAINED_ALGORITHMIC_MEDIA
    assert source_type("spandrel:m.safetensors", True) == TRAINED_ALGORITHMIC_MEDIA
    assert source_type("object:abc", True) == TRAINED_ALGORITHMIC_MEDIA  # unknown: counted as learned
    for name in ("bicubic", "nearest", "lanczos"):
        assert source_type(name, True) == ALGORITHMICALLY_ENHANCED
    assert source_type("realesrgan", False) == ALGORITHMICALLY_ENHANCED  # a baseline mode


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_carries_the_packet_and_the_pixels_are_unchanged(tmp_path, bit_depth):
    rgb = torch.rand(3, 5, 7)
    marked, plain = tmp_path / "m.png", tmp_path / "p.png"
    save_image(marked, rgb, bit_depth=bit_depth, xmp=MARK.xmp())
    save_image(plain, rgb, bit_depth=bit_depth)
    with Image.open(marked) as image:
        assert fields(image.info[XMP_PNG_KEY])["type"] == TRAINED_ALGORITHMIC_MEDIA
    with Image.open(plain) as image:
        assert XMP_PNG_KEY not in image.info
    assert torch.equal(load_image(marked).rgb, load_image(plain).rgb)
    assert load_image(marked).bit_depth == bit_depth


@pytest.mark.parametrize("suffix", [".webp", ".jpg", ".tif"])
def test_other_formats_carry_the_packet(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    save_image(path, torch.rand(3, 4, 4), xmp=MARK.xmp())
    with Image.open(path) as image:
        xmp = image.info.get("xmp") or image.tag_v2.get(700)  # type: ignore[attr-defined]
        assert fields(xmp)["type"] == TRAINED_ALGORITHMIC_MEDIA


def test_an_animated_webp_gets_its_packet_afterwards(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    source = tmp_path / "a.webp"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=40)
    marked = tmp_path / "b.webp"
    marked.write_bytes(webp_with_xmp(source.read_bytes(), MARK.xmp()))
    with Image.open(marked) as image:
        assert image.n_frames == 2
        assert fields(image.info["xmp"])["type"] == TRAINED_ALGORITHMIC_MEDIA


def exiftool() -> str:
    tool = shutil.which("exiftool")
    if tool is None:
        pytest.skip("exiftool is not installed (Debian: apt-get install libimage-exiftool-perl; make test does)")
    return tool


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_exiftool_reads_the_fields(tmp_path, bit_depth):
    path = tmp_path / "m.png"
    save_image(path, torch.rand(3, 4, 4), bit_depth=bit_depth, xmp=MARK.xmp())
    out = subprocess.run([exiftool(), "-j", "-XMP:all", str(path)], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)[0]
    assert data["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert data["CreatorTool"] == f"chainzoom {__version__}"
    assert "backbone realesrgan" in data["Description"]
