"""Strip and zoom animation from synthetic scale-states (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from chainzoom.core.geometry import Box
from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError
from chainzoom.runs.animation import save_animation
from chainzoom.runs.render import (
    RenderError,
    format_magnification,
    make_strip,
    save_strip,
    zoom_frames,
)

RED = (255, 64, 64)


def solid(colour, size=(64, 64)) -> torch.Tensor:
    w, h = size
    return torch.tensor(colour, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, h, w).clone()


def gradient(size=(64, 64), blue=0.5) -> torch.Tensor:
    """R = x ramp, G = y ramp over pixel centres: bicubic resampling keeps it exact."""
    w, h = size
    x = torch.arange(w, dtype=torch.float32) / (w - 1)
    y = torch.arange(h, dtype=torch.float32) / (h - 1)
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w), torch.full((h, w), blue)])


def as_array(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(np.int16)


def tensor_u8(t: torch.Tensor) -> np.ndarray:
    return t.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(np.int16)


def chain4(size=64, images=None) -> list[ScaleState]:
    """Three states, each a 4x zoom into the centre of the previous (1/4 of the side)."""
    boxes = [Box(0, 0, 64, 64), Box(24, 24, 40, 40), Box(30, 30, 34, 34)]
    images = images or [
        solid((0, 0, 200), (size, size)),
        solid((0, 200, 0), (size, size)),
        solid((200, 200, 0), (size, size)),
    ]
    return [ScaleState(i, images[i], b, size / b.width) for i, b in enumerate(boxes)]


# --------------------------------------------------------------------------- strip


def test_strip_size_and_box_position():
    # Panels of 128 px; state 1 is the region x 32..64, y 48..80 of state 0's panel.
    states = [
        ScaleState(0, solid((0, 0, 160), (128, 128)), Box(0, 0, 128, 128), 1.0),
        ScaleState(1, solid((0, 160, 0), (128, 128)), Box(32, 48, 64, 80), 4.0),
        ScaleState(2, solid((90, 90, 90), (128, 128)), Box(40, 56, 48, 64), 16.0),
    ]
    gap = 8
    strip = make_strip(states, gap=gap, label=False)
    assert strip.mode == "RGB"
    assert strip.size == (3 * 128 + 4 * gap, 128 + 2 * gap)
    px = as_array(strip)

    def at(panel, x, y):
        return tuple(px[gap + y, gap + panel * (128 + gap) + x])

    # Line width is 2 px at 128 px, centred on the region's edge.
    for x, y in [(32, 64), (63, 64), (48, 48), (48, 79)]:  # left, right, top, bottom edges
        assert at(0, x, y) == RED
    assert at(0, 48, 64) == (0, 0, 160)  # inside the region: the image
    assert at(0, 28, 64) == (0, 0, 160)  # outside the line
    assert at(0, 36, 64) == (0, 0, 160)
    # State 2's region inside state 1: x 32..64, y 32..64 of panel 1.
    assert at(1, 32, 48) == RED and at(1, 48, 32) == RED and at(1, 48, 48) == (0, 160, 0)
    # The last panel has no marker, the background is neutral.
    assert not (px[gap : gap + 128, gap + 2 * (128 + gap) :][..., 0] == 255).any()
    assert tuple(px[1, 1]) == tuple(px[1, -2]) and px[1, 1, 0] == px[1, 1, 1] == px[1, 1, 2]


def test_strip_small_region_still_marked():
    # State 0 shows a 512 px input at 64 px; state 1 a 16 px native crop: a 2 px region.
    states = [
        ScaleState(0, solid((0, 0, 160)), Box(0, 0, 512, 512), 0.125),
        ScaleState(1, solid((0, 160, 0)), Box(300, 200, 316, 216), 4.0),
    ]
    strip = make_strip(states, gap=4, label=False)
    panel = as_array(strip)[4:68, 4:68]
    red = (panel == RED).all(-1)
    ys, xs = np.nonzero(red)
    assert red.sum() >= 4 * 8  # a visible rectangle, not a dot
    cx, cy = (300 + 316) / 2 / 8, (200 + 216) / 2 / 8  # region centre in the panel
    assert xs.min() < cx < xs.max() and ys.min() < cy < ys.max()
    assert xs.max() - xs.min() >= 8 and ys.max() - ys.min() >= 8
    assert tuple(panel[round(cy), round(cx)]) == (0, 0, 160)  # the region itself shows

    # A region in the corner stays fully visible inside the panel.
    states[1] = ScaleState(1, solid((0, 160, 0)), Box(0, 0, 4, 4), 16.0)
    panel = as_array(make_strip(states, gap=4, label=False))[4:68, 4:68]
    red = (panel == RED).all(-1)
    assert red[0, :8].all() and red[:8, 0].all()


def test_strip_labels_and_save(tmp_path):
    states = chain4()
    states[0].magnification = 0.128
    plain = make_strip(states, label=False)
    labelled = make_strip(states)
    assert labelled.width == plain.width and labelled.height > plain.height
    rows = as_array(labelled)[plain.height - 8 :]  # the label row
    for k in range(3):
        x0 = 8 + k * (64 + 8)
        assert (rows[:, x0 : x0 + 64] > 200).all(-1).any(), f"no label under panel {k}"
    out = save_strip(states, tmp_path / "strip.png")
    assert out == tmp_path / "strip.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == labelled.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["strip.png"]


@pytest.mark.parametrize(
    "m, text",
    [
        (0.128, "x0.13"),
        (0.25, "x0.25"),
        (1.0, "x1"),
        (1.5625, "x1.56"),
        (4.0, "x4"),
        (16.4, "x16.4"),
        (64.0, "x64"),
        (256.0, "x256"),
        (1024.0, "x1024"),
        (0.04, "x0.04"),
    ],
)
def test_format_magnification(m, text):
    assert format_magnification(m) == text


# --------------------------------------------------------------------------- frames


def test_frame_count_first_last_and_transition():
    states = chain4(images=[gradient(blue=0.2), gradient(blue=0.5), gradient(blue=0.8)])
    frames = list(zoom_frames(states, frames_per_step=6))
    assert len(frames) == 6 * 2 + 1
    assert all(f.size == (64, 64) and f.mode == "RGB" for f in frames)
    assert np.abs(as_array(frames[0]) - tensor_u8(states[0].image)).max() <= 1
    assert np.abs(as_array(frames[-1]) - tensor_u8(states[-1].image)).max() <= 1
    # Equal 4x steps share the frames equally: frame 6 is exactly state 1 (no pop).
    assert np.abs(as_array(frames[6]) - tensor_u8(states[1].image)).max() <= 1
    # Consecutive frames change smoothly: no frame jumps far from its neighbours.
    diffs = [np.abs(as_array(a) - as_array(b)).mean() for a, b in zip(frames, frames[1:])]
    assert max(diffs) < 40

    assert len(list(zoom_frames(states[:1], frames_per_step=6))) == 1
    with pytest.raises(ValueError):
        list(zoom_frames(states, frames_per_step=0))


def expected_view(region: Box, full: float, t: float) -> tuple[float, float, float, float]:
    """R(t): geometric zoom about the fixed point from the full frame to region."""
    out = []
    for lo, hi in [(region.x0, region.x1), (region.y0, region.y1)]:
        s = (hi - lo) / full
        p = lo / (1 - s)
        out += [p * (1 - s**t), p + s**t * (full - p)]
    return out[0], out[2], out[1], out[3]


def test_mid_frame_shows_both_states_in_place():
    # State 0: a gradient (position-coded); state 1: solid green. Region x 16..32, y 24..40.
    states = [
        ScaleState(0, gradient(), Box(0, 0, 64, 64), 1.0),
        ScaleState(1, solid((0, 200, 0)), Box(16, 24, 32, 40), 4.0),
    ]
    fps = 8
    frames = list(zoom_frames(states, frames_per_step=fps))
    i = 4  # t = 0.5: the region fills 1/2 of the frame side
    frame = as_array(frames[i])
    x0, y0, x1, _ = expected_view(states[1].box, 64.0, i / fps)
    assert x1 - x0 == pytest.approx(64 * 0.25**0.5)
    sx = (x1 - x0) / 64
    # Where state 1 falls inside the frame.
    fx0, fx1 = (16 - x0) / sx, (32 - x0) / sx
    fy0, fy1 = (24 - y0) / sx, (40 - y0) / sx
    assert fx1 - fx0 == pytest.approx(32)
    # Deep inside: state 1 (green).
    cy, cx = round((fy0 + fy1) / 2), round((fx0 + fx1) / 2)
    assert tuple(frame[cy, cx]) == (0, 200, 0)
    assert (frame[math.ceil(fy0) + 4 : int(fy1) - 4, math.ceil(fx0) + 4 : int(fx1) - 4] == (0, 200, 0)).all()
    # Its edges are where they should be (a feather of ~1 px at 64 px frames).
    green = (0, 200, 0)
    for y, x in [(cy, math.ceil(fx0) + 1), (cy, int(fx1) - 2), (math.ceil(fy0) + 1, cx), (int(fy1) - 2, cx)]:
        assert tuple(frame[y, x]) == green, (x, y)
    for y, x in [(cy, int(fx0) - 2), (cy, math.ceil(fx1) + 1), (int(fy0) - 2, cx), (math.ceil(fy1) + 1, cx)]:
        assert frame[y, x, 1] < 190 or frame[y, x, 0] > 10, (x, y)
    # Outside: state 0 cropped at R(t), values from the gradient at the mapped place.
    checked = 0
    for fy in range(0, 64, 5):
        for fx in range(0, 64, 5):
            if fx0 - 3 < fx < fx1 + 3 and fy0 - 3 < fy < fy1 + 3:
                continue
            ax = x0 + (fx + 0.5) * sx - 0.5  # state-0 pixel index under this frame pixel
            ay = y0 + (fy + 0.5) * sx - 0.5
            assert abs(frame[fy, fx, 0] - ax / 63 * 255) <= 2, (fx, fy)
            assert abs(frame[fy, fx, 1] - ay / 63 * 255) <= 2, (fx, fy)
            checked += 1
    assert checked > 50


def test_size_default_cap_and_override():
    big = [
        ScaleState(0, solid((10, 20, 30), (1024, 256)), Box(0, 0, 1024, 256), 1.0),
        ScaleState(1, solid((30, 20, 10), (1024, 256)), Box(384, 96, 640, 160), 4.0),
    ]
    frames = list(zoom_frames(big, frames_per_step=2))
    assert len(frames) == 3 and all(f.size == (512, 128) for f in frames)
    frames = list(zoom_frames(chain4(), frames_per_step=2, size=(40, 30)))
    assert all(f.size == (40, 30) for f in frames)


def test_uneven_steps_share_frames_by_log_zoom():
    # Step 1 zooms 16x (state 0 shows a 256 px input at 64 px), step 2 zooms 4x.
    states = [
        ScaleState(0, gradient(blue=0.1), Box(0, 0, 256, 256), 0.25),
        ScaleState(1, gradient(blue=0.5), Box(112, 112, 128, 128), 4.0),
        ScaleState(2, gradient(blue=0.9), Box(116, 116, 120, 120), 16.0),
    ]
    frames = list(zoom_frames(states, frames_per_step=9))
    assert len(frames) == 19
    # Step 1 has 2/3 of the log zoom: frame 12 is exactly state 1.
    assert np.abs(as_array(frames[12]) - tensor_u8(states[1].image)).max() <= 1
    assert np.abs(as_array(frames[-1]) - tensor_u8(states[2].image)).max() <= 1


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
def test_save_animation(tmp_path, suffix):
    states = chain4(images=[gradient(blue=0.1), gradient(blue=0.5), gradient(blue=0.9)])
    out = save_animation(states, tmp_path / f"zoom{suffix}", frames_per_step=5, fps=10)
    assert out == tmp_path / f"zoom{suffix}"
    with Image.open(out) as im:
        assert im.format == {".webp": "WEBP", ".gif": "GIF"}[suffix]
        assert getattr(im, "is_animated", False)
        assert im.n_frames == 5 * 2 + 1
        assert im.info.get("loop") == 0
        assert im.size == (64, 64)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left


def test_save_animation_bad_suffix(tmp_path):
    for name in ["zoom.png", "zoom.mp4", "zoom"]:
        with pytest.raises(ValueError, match=r"\.webp or \.gif"):
            save_animation(chain4(), tmp_path / name, frames_per_step=2)
    with pytest.raises(ChainZoomError):
        save_animation(chain4(), tmp_path / "zoom.avi", frames_per_step=2)
    assert list(tmp_path.iterdir()) == []
    assert issubclass(RenderError, ValueError)


def test_the_animation_written_step_by_step_shows_the_zoom_frames(tmp_path):
    """zoom.webp, encoded as the states arrive (on a thread), holds every frame of zoom_frames."""
    from chainzoom.runs.animation import AnimationWriter

    states = chain4()
    frames = list(zoom_frames(states, frames_per_step=4))
    writer = AnimationWriter(tmp_path / "zoom.webp", states, frames_per_step=4, fps=10, background=True)
    for state in states:
        writer.add(state)
    written = Image.open(writer.close())
    assert written.n_frames == len(frames) == 4 * (len(states) - 1) + 1
    for index in (0, len(frames) // 2, len(frames) - 1):
        written.seek(index)
        got = np.asarray(written.convert("RGB"), dtype=np.float32)
        want = np.asarray(frames[index], dtype=np.float32)
        assert np.abs(got - want).mean() < 6  # lossy WebP at quality 80


def test_an_aborted_animation_writes_nothing(tmp_path):
    from chainzoom.runs.animation import AnimationWriter

    states = chain4()
    writer = AnimationWriter(tmp_path / "zoom.webp", states, frames_per_step=2, background=True)
    writer.add(states[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []
