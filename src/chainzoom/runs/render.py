"""Visual outputs of a zoom run: a strip of every scale-state and a continuous zoom.

Everything here reads only the list of :class:`~chainzoom.core.states.ScaleState` a chain
produced: the images and their boxes in input pixels. Consecutive states are nested,
so state ``k``'s region inside state ``k-1``'s image is
``states[k].box.relative_to(states[k-1].box, states[k-1].size)``; no fixed zoom
factor is assumed (step 1 may zoom much more than 4x when state 0 shows a large
input at the view size).

* :func:`make_strip` / :func:`save_strip`: the states side by side, each with a
  rectangle where the next one zooms and a magnification label.
* :func:`zoom_frames` and :class:`FramePlan`: a smooth zoom from state 0 to the last
  state, as frames, planned from the states' places so that
  :mod:`chainzoom.runs.animation` can encode it while the chain runs.

Alpha channels are ignored: panels and frames are RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from chainzoom.core.geometry import Box, ZoomPlan
from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import save_pil, to_pil

__all__ = ["FramePlan", "RenderError", "format_magnification", "make_strip", "save_strip", "zoom_frames"]

#: Background of the strip (neutral dark grey).
STRIP_BACKGROUND = (40, 40, 40)
#: Colour of the labels under the panels.
LABEL_COLOUR = (230, 230, 230)
#: Longest side of animation frames unless ``size`` is given.
MAX_FRAME_SIDE = 512
#: Fraction of a step (in step time) over which the next state fades in.
FADE_IN = 0.25
#: Feather at the edges of the pasted next state, as a fraction of the frame's short side.
FEATHER = 0.02

_RESAMPLE = Image.Resampling.BICUBIC


class RenderError(ChainZoomError, ValueError):
    """A render request that cannot be met (bad suffix, no states, bad size)."""


# --------------------------------------------------------------------------- helpers


class Placed(Protocol):
    """Where a state sits: its box in input pixels and its size (a state, or a planned one)."""

    @property
    def box(self) -> Box: ...

    @property
    def size(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class Placement:
    """A planned state's place, known before its pixels exist."""

    box: Box
    size: tuple[int, int]


def plan_placements(plan: ZoomPlan) -> list[Placement]:
    """Where every state of ``plan`` will sit: what an animation needs before the states exist."""
    return [Placement(plan.box(i), plan.view) for i in range(len(plan.steps) + 1)]


def _region(states: Sequence[Placed], k: int) -> Box:
    """State ``k``'s region in the pixel coordinates of state ``k-1``'s image."""
    return states[k].box.relative_to(states[k - 1].box, states[k - 1].size)


def format_magnification(m: float) -> str:
    """Compact magnification label: ``x0.13``, ``x1.56``, ``x4``, ``x16.4``, ``x256``."""
    if not math.isfinite(m) or m <= 0:
        return f"x{m:g}"
    if m >= 100:
        text = f"{round(m):d}"
    elif m >= 10:
        text = f"{m:.1f}"
    elif m >= 0.1:
        text = f"{m:.2f}"
    else:
        return f"x{m:.2g}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"x{text}"


def state_label(state: ScaleState) -> str:
    """A state's strip label: its magnification, and what an adaptive policy chose for it."""
    text = format_magnification(state.magnification)
    if state.decision is not None:
        text += f" {state.decision['backbone']} {state.decision['factor']:g}x"
    return text


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 (FreeType)
    except (TypeError, ImportError, OSError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def _check_states(states: Sequence[Placed]) -> None:
    if len(states) == 0:
        raise RenderError("no scale-states to render")


# --------------------------------------------------------------------------- strip


def _marker_rect(region: Box, size: tuple[int, int], lw: int) -> tuple[int, int, int, int]:
    """Integer rectangle (inclusive corners) for the outline of ``region``.

    The line is centred on the region's edge, enlarged to a minimum size around the
    region's centre so a tiny region still shows, and kept inside the panel so the
    whole outline stays visible.
    """
    w, h = size
    min_side = max(4 * lw + 4, round(min(w, h) / 32))
    cx, cy = (region.x0 + region.x1) / 2, (region.y0 + region.y1) / 2
    half_w = max(region.width, min_side) / 2 + lw / 2
    half_h = max(region.height, min_side) / 2 + lw / 2
    x0, x1 = round(cx - half_w), round(cx + half_w) - 1
    y0, y1 = round(cy - half_h), round(cy + half_h) - 1

    # Clamp inside the panel, shifting (not shrinking) where possible.
    def fit(a: int, b: int, limit: int) -> tuple[int, int]:
        if b - a + 1 > limit:
            return 0, limit - 1
        if a < 0:
            a, b = 0, b - a
        if b > limit - 1:
            a, b = a - (b - limit + 1), limit - 1
        return a, b

    x0, x1 = fit(x0, x1, w)
    y0, y1 = fit(y0, y1, h)
    return x0, y0, x1, y1


def make_strip(
    states: Sequence[ScaleState],
    gap: int = 8,
    box_colour: tuple[int, int, int] = (255, 64, 64),
    label: bool = True,
) -> Image.Image:
    """All states side by side on a neutral background.

    Layout: a margin of ``gap`` pixels around and between the panels, each panel at
    its own size, top-aligned. On state ``k-1`` a rectangle of ``box_colour`` marks
    where state ``k`` zooms (line width ``max(2, round(short_side / 128))``, drawn
    inside the panel; a region smaller than the marker's minimum size is marked by
    a minimum-size rectangle around its centre). With ``label``, a row under the
    panels (font height + ``gap``) holds each state's own magnification, e.g.
    ``x0.13``, ``x4``, ``x256``.

    Size: ``width = sum(panel widths) + (n + 1) * gap``,
    ``height = max(panel heights) + 2 * gap (+ label row)``.
    """
    _check_states(states)
    gap = max(0, int(gap))
    panels = [to_pil(s.image) for s in states]
    short = min(min(p.size) for p in panels)
    lw = max(2, round(short / 128))

    for k in range(1, len(states)):
        panel = panels[k - 1]
        rect = _marker_rect(_region(states, k), panel.size, lw)
        ImageDraw.Draw(panel).rectangle(rect, outline=tuple(box_colour), width=lw)

    font = _font(max(10, round(short / 32))) if label else None
    label_h = 0
    texts = [state_label(s) for s in states]
    if font is not None:
        scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        # whole pixels: the box of text placed at (0, 0), though Pillow types it as float
        heights = [int(scratch.textbbox((0, 0), t, font=font)[3]) for t in texts]
        label_h = max(heights) + gap

    width = sum(p.width for p in panels) + (len(panels) + 1) * gap
    height = max(p.height for p in panels) + 2 * gap + label_h
    strip = Image.new("RGB", (width, height), STRIP_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    x = gap
    panel_h = max(p.height for p in panels)
    for panel, text in zip(panels, texts):
        strip.paste(panel, (x, gap))
        if font is not None:
            tw = draw.textlength(text, font=font)
            draw.text((x + (panel.width - tw) / 2, gap + panel_h + gap // 2), text, fill=LABEL_COLOUR, font=font)
        x += panel.width + gap
    return strip


def save_strip(states: Sequence[ScaleState], path: str | os.PathLike, xmp: bytes | None = None, **kw) -> Path:
    """:func:`make_strip` written atomically to ``path`` (format from the suffix), with the
    provenance packet ``xmp`` embedded (:func:`chainzoom.io.images.save_pil`)."""
    return save_pil(path, make_strip(states, **kw), xmp)


# --------------------------------------------------------------------------- zoom


def _default_frame_size(states: Sequence[Placed]) -> tuple[int, int]:
    w, h = states[-1].size
    if max(w, h) > MAX_FRAME_SIDE:
        f = MAX_FRAME_SIDE / max(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
    return w, h


def _clamp_box(b: Box, size: tuple[int, int]) -> Box:
    w, h = size
    x0 = min(max(b.x0, 0.0), w)
    y0 = min(max(b.y0, 0.0), h)
    x1 = min(max(b.x1, x0), w)
    y1 = min(max(b.y1, y0), h)
    if x1 - x0 < 1e-6 or y1 - y0 < 1e-6:  # degenerate: a tiny box around the centre
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        e = 1e-3
        x0, x1 = max(0.0, cx - e), min(float(w), cx + e)
        y0, y1 = max(0.0, cy - e), min(float(h), cy + e)
    return Box(x0, y0, x1, y1)


def _geometric(r_lo: float, r_hi: float, full: float, t: float) -> tuple[float, float]:
    """One axis of R(t): from ``[0, full]`` to ``[r_lo, r_hi]`` by a constant-speed zoom.

    R(t) = p + s**t * ([0, full] - p) with s = (r_hi - r_lo) / full and p the fixed
    point of the zoom (p = r_lo / (1 - s)), so the size shrinks log-linearly and the
    content under p does not move.
    """
    s = (r_hi - r_lo) / full
    if abs(1.0 - s) < 1e-9:  # no zoom along this axis: slide linearly
        return r_lo * t, full + (r_hi - full) * t
    p = r_lo / (1.0 - s)
    st = s**t
    return p * (1.0 - st), p + st * (full - p)


def _schedule(states: Sequence[Placed], n_frames: int) -> list[tuple[int, float]]:
    """(step, t) for each frame: the zoom speed is constant over the whole animation.

    Steps share the frames in proportion to their log zoom (a 16x step gets twice the
    frames of a 4x step), with a small floor so a step that barely zooms still
    transitions smoothly. Frame 0 is (1, 0.0), the last frame (n, 1.0).
    """
    n = len(states) - 1
    weights = []
    for k in range(1, n + 1):
        r = _region(states, k)
        w, h = states[k - 1].size
        zoom = math.sqrt(max(w / max(r.width, 1e-9), 1.0) * max(h / max(r.height, 1e-9), 1.0))
        weights.append(max(math.log(zoom), 0.1))
    total = sum(weights)
    bounds = np.concatenate([[0.0], np.cumsum(weights)]) / total
    bounds[-1] = 1.0
    out = []
    for i in range(n_frames):
        u = i / (n_frames - 1) if n_frames > 1 else 1.0
        k = int(np.searchsorted(bounds, u, side="right"))
        k = min(max(k, 1), n)
        t = (u - bounds[k - 1]) / (bounds[k] - bounds[k - 1])
        out.append((k, float(min(max(t, 0.0), 1.0))))
    return out


def _ramp(lo_edge: float, hi_edge: float, start: int, stop: int, lo_w: float, hi_w: float):
    """Feather weights for pixel centres ``start..stop-1`` inside ``[lo_edge, hi_edge]``."""
    c = np.arange(start, stop, dtype=np.float32) + 0.5
    w = np.ones_like(c)
    if lo_w > 0:
        w = np.minimum(w, np.clip((c - lo_edge) / lo_w, 0.0, 1.0))
    if hi_w > 0:
        w = np.minimum(w, np.clip((hi_edge - c) / hi_w, 0.0, 1.0))
    return w


def _render(
    a: Image.Image,
    b: Image.Image,
    region: Box,
    t: float,
    size: tuple[int, int],
) -> Image.Image:
    """One frame of the step from ``a`` to ``b`` (``region``: b inside a, a's pixels)."""
    fw, fh = size
    aw, ah = a.size
    target = _clamp_box(region, a.size)
    rx0, rx1 = _geometric(target.x0, target.x1, aw, t)
    ry0, ry1 = _geometric(target.y0, target.y1, ah, t)
    view = _clamp_box(Box(rx0, ry0, rx1, ry1), a.size)
    frame = a.resize(size, _RESAMPLE, box=(view.x0, view.y0, view.x1, view.y1))

    alpha = 1.0 if FADE_IN <= 0 else min(1.0, t / FADE_IN)
    alpha = alpha * alpha * (3.0 - 2.0 * alpha)  # smoothstep
    if alpha <= 0.0:
        return frame
    # b's region in frame pixels.
    sx, sy = fw / view.width, fh / view.height
    fx0, fx1 = (region.x0 - view.x0) * sx, (region.x1 - view.x0) * sx
    fy0, fy1 = (region.y0 - view.y0) * sy, (region.y1 - view.y0) * sy
    ix0, ix1 = max(0, math.ceil(fx0 - 1e-6)), min(fw, math.floor(fx1 + 1e-6))
    iy0, iy1 = max(0, math.ceil(fy0 - 1e-6)), min(fh, math.floor(fy1 + 1e-6))
    if ix1 - ix0 < 1 or iy1 - iy0 < 1:
        return frame
    bw, bh = b.size
    kx, ky = bw / (fx1 - fx0), bh / (fy1 - fy0)
    bbox = (
        min(max((ix0 - fx0) * kx, 0.0), bw),
        min(max((iy0 - fy0) * ky, 0.0), bh),
        min(max((ix1 - fx0) * kx, 0.0), bw),
        min(max((iy1 - fy0) * ky, 0.0), bh),
    )
    patch = b.resize((ix1 - ix0, iy1 - iy0), _RESAMPLE, box=bbox)

    # Feather the edges that lie inside the frame (never the frame's own border, so
    # the end of a step is exactly the next state).
    f = FEATHER * min(fw, fh)
    pw, ph = fx1 - fx0, fy1 - fy0
    lo_x, hi_x = min(f, max(fx0, 0.0), pw / 4), min(f, max(fw - fx1, 0.0), pw / 4)
    lo_y, hi_y = min(f, max(fy0, 0.0), ph / 4), min(f, max(fh - fy1, 0.0), ph / 4)
    if alpha >= 1.0 and max(lo_x, hi_x, lo_y, hi_y) <= 0.0:
        frame.paste(patch, (ix0, iy0))
        return frame
    mx = _ramp(fx0, fx1, ix0, ix1, lo_x, hi_x)
    my = _ramp(fy0, fy1, iy0, iy1, lo_y, hi_y)
    mask = np.rint(np.outer(my, mx) * (255.0 * alpha)).astype(np.uint8)
    frame.paste(patch, (ix0, iy0), Image.fromarray(mask, "L"))
    return frame


class FramePlan:
    """Which frames of the zoom animation each state completes, from the states' places alone.

    The animation of :func:`zoom_frames` can so be made step by step as the states
    arrive: :meth:`frames` with state ``k`` (and ``k-1``) yields the frames that end
    with step ``k``; frame 0 comes with state 0 and the last frame with the last state.
    """

    def __init__(
        self, placed: Sequence[Placed], frames_per_step: int = 24, size: tuple[int, int] | None = None
    ) -> None:
        _check_states(placed)
        if int(frames_per_step) < 1:
            raise RenderError(f"frames_per_step must be at least 1, got {frames_per_step}")
        given = tuple(int(v) for v in size) if size is not None else _default_frame_size(placed)
        if len(given) != 2 or min(given) < 1:
            raise RenderError(f"size must be (width, height) with positive sides, got {given}")
        self.size = (given[0], given[1])
        self.steps = len(placed) - 1
        self.total = int(frames_per_step) * self.steps + 1
        self.schedule = _schedule(placed, self.total) if self.steps else [(0, 1.0)]
        self.regions = [_region(placed, k) for k in range(1, self.steps + 1)]

    def frames(self, k: int, previous: Image.Image | None, current: Image.Image) -> Iterator[Image.Image]:
        """The frames that state ``k`` (``current``; ``previous`` is state ``k-1``) completes, in order."""
        last = self.total - 1
        if k == 0:
            yield current.resize(self.size, _RESAMPLE)
            return
        assert previous is not None, "a step's frames need the state before it"
        for i, (step, t) in enumerate(self.schedule):
            if step == k and 0 < i < last:
                yield _render(previous, current, self.regions[k - 1], t, self.size)
        if k == self.steps:
            yield current.resize(self.size, _RESAMPLE)


def zoom_frames(
    states: Sequence[ScaleState],
    frames_per_step: int = 24,
    size: tuple[int, int] | None = None,
) -> Iterator[Image.Image]:
    """A smooth continuous zoom from state 0 to the last state, as RGB frames.

    Yields exactly ``frames_per_step * (len(states) - 1) + 1`` frames (one frame for
    a single state). The first frame is state 0 and the last the last state, both
    resized to ``size`` (default: the last state's size, capped at 512 px on the
    long side, aspect kept).

    Between states ``k-1`` and ``k`` the visible region R(t) of state ``k-1`` shrinks
    geometrically (log-linear in size, about the zoom's fixed point) from the full
    frame to state ``k``'s region; each frame is state ``k-1`` cropped at R(t) and
    resized, with state ``k`` pasted (resized, edges feathered) where its region falls,
    so detail that exists is shown sharp. State ``k`` fades in over the first quarter
    of the step, while its region is still small, and fills the frame at the end of
    the step, so there is no pop between steps. ``frames_per_step`` is the average:
    steps share the frames in proportion to their log zoom, so the zoom speed is the
    same over the whole animation (a 16x first step gets twice the frames of a 4x one).
    """
    plan = FramePlan(states, frames_per_step, size)
    previous: Image.Image | None = None
    for k, state in enumerate(states):
        current = to_pil(state.image)
        yield from plan.frames(k, previous, current)
        previous = current
