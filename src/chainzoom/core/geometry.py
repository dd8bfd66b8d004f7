"""Boxes, crops and scale bookkeeping for a zoom chain.

The whole geometry of a chain depends only on the input size, the requested
magnification, the zoom point and the view size, never on pixels. So it is planned
up front (:func:`plan_zoom`): every step's integer crop inside its source image and
that crop's box in input-pixel coordinates. The chain then only executes the plan,
and the baselines (direct SR, bicubic, nearest) read the very same final box.

Coordinates: a :class:`Box` is ``(x0, y0, x1, y1)`` in pixels of the *input* image,
as floats. Each 4x step divides the box side by 4, so with power-of-two sizes every
box is an exact binary fraction and composes back to input coordinates exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chainzoom.errors import OptionError

#: Long side of the view when the input is larger than :data:`MAX_NATIVE_VIEW`.
DEFAULT_LARGE_VIEW = 512
#: Inputs whose long side is at most this are zoomed at their own size.
MAX_NATIVE_VIEW = 1024


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle ``[x0, x1) x [y0, y1)`` in input pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    def relative_to(self, outer: Box, outer_size: tuple[int, int]) -> Box:
        """This box in the pixel coordinates of an image of ``outer_size`` showing ``outer``."""
        sx = outer_size[0] / outer.width
        sy = outer_size[1] / outer.height
        return Box(
            (self.x0 - outer.x0) * sx,
            (self.y0 - outer.y0) * sy,
            (self.x1 - outer.x0) * sx,
            (self.y1 - outer.y0) * sy,
        )


@dataclass(frozen=True)
class Crop:
    """An integer crop ``(left, top, width, height)`` inside a step's source image."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class StepPlan:
    """One step of the chain.

    ``source`` is ``"input"`` for the first step (the full-resolution input, so no
    real detail is lost when the input is larger than the view) and ``"previous"``
    for the others. The backbone upscales ``crop`` by its own scale; when that
    does not land on the view size (the last, fractional step) the result is
    resampled to the view.
    """

    index: int
    source: str
    crop: Crop
    box: Box
    factor: float


@dataclass(frozen=True)
class ZoomPlan:
    """Every box of a local zoom chain, computed before any model runs."""

    input_size: tuple[int, int]
    view: tuple[int, int]
    state0_box: Box
    steps: tuple[StepPlan, ...]
    center: tuple[float, float]
    scale: float

    @property
    def final_box(self) -> Box:
        return self.steps[-1].box if self.steps else self.state0_box

    def box(self, index: int) -> Box:
        """The box of scale-state ``index`` (0 = the input state)."""
        return self.state0_box if index == 0 else self.steps[index - 1].box

    def magnification(self, index: int) -> float:
        """Output pixels per input pixel of scale-state ``index``."""
        return self.view[0] / self.box(index).width


def default_view(input_size: tuple[int, int], multiple: int = 4) -> tuple[int, int]:
    """The view size rule of DESIGN.md, rounded down to a multiple of the step factor.

    The input's own size when its long side is at most 1024 px, else 512 px on the
    long side with the aspect kept.
    """
    w, h = input_size
    if max(w, h) > MAX_NATIVE_VIEW:
        f = DEFAULT_LARGE_VIEW / max(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
    return _round_view((w, h), multiple)


def _round_view(view: tuple[int, int], multiple: int) -> tuple[int, int]:
    w, h = (v - v % multiple for v in view)
    if w < multiple or h < multiple:
        raise OptionError("view", f"{view[0]}x{view[1]} is too small: each side needs at least {multiple} px")
    return w, h


def resolve_view(
    view: int | tuple[int, int] | str | None, input_size: tuple[int, int], multiple: int = 4
) -> tuple[int, int]:
    """The view in pixels: a long side (aspect kept), ``(width, height)``, text ``"N"``/``"WxH"``,
    or ``None`` for :func:`default_view`."""
    if view is None:
        return default_view(input_size, multiple)
    if isinstance(view, str):
        try:
            sides = tuple(int(v) for v in view.lower().split("x"))
        except ValueError:
            raise OptionError("view", f"must be N or WxH, got {view!r}") from None
    else:
        sides = (view,) if isinstance(view, int) else tuple(view)
    if len(sides) == 1:
        f = sides[0] / max(input_size)
        w, h = round(input_size[0] * f), round(input_size[1] * f)
    elif len(sides) == 2:
        w, h = sides
    else:
        raise OptionError("view", f"must be N or WxH, got {view!r}")
    if w <= 0 or h <= 0:
        raise OptionError("view", f"must be positive, got {view!r}")
    return _round_view((w, h), multiple)


def resolve_center(center: tuple[float, float] | str, input_size: tuple[int, int]) -> tuple[float, float]:
    """The zoom point in input pixels, from fractions ``(x, y)``, ``"X,Y"`` or ``"px:X,Y"``."""
    w, h = input_size
    pixels = isinstance(center, str) and center.startswith("px:")
    if isinstance(center, str):
        body = center[3:] if pixels else center
        try:
            x, y = (float(v) for v in body.split(","))
        except ValueError:
            raise OptionError("center", f"must be 'X,Y' fractions or 'px:X,Y' pixels, got {center!r}") from None
    else:
        x, y = center
    if not pixels:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise OptionError("center", f"{x:g},{y:g} is outside the image: fractions must be in [0, 1]")
        x, y = x * w, y * h
    elif not (0.0 <= x <= w and 0.0 <= y <= h):
        raise OptionError("center", f"{center} is outside the {w}x{h} image")
    return x, y


def step_factors(scale: float, step: int = 4) -> list[float]:
    """Split a total magnification into backbone-sized steps.

    ``scale`` = step**k gives k full steps; otherwise the full steps come first and
    the last step is the remainder in (1, step]: 100 = 4 * 4 * 4 * 1.5625.
    """
    if not math.isfinite(scale) or scale <= 1:
        raise OptionError("scale", f"must be a number greater than 1, got {scale:g}")
    n = max(1, math.ceil(math.log(scale, step) - 1e-9))
    factors = [float(step)] * (n - 1)
    factors.append(scale / step ** (n - 1))
    return factors


def _clamped_origin(center: float, size: int, limit: int) -> int:
    return min(max(round(center - size / 2), 0), limit - size)


def plan_zoom(
    input_size: tuple[int, int],
    scale: float,
    center: tuple[float, float] | None = None,
    view: tuple[int, int] | None = None,
    step: int = 4,
) -> ZoomPlan:
    """Plan a local zoom chain of total magnification ``scale`` around ``center``.

    ``center`` is in input pixels (default: the image centre); ``view`` is the size
    of every scale-state (default :func:`default_view`). Each step crops the part of
    its source that will fill the view after this step's factor, centred on the zoom
    point and clamped inside the source, so the point stays in view to the end.
    """
    view = view or default_view(input_size, step)
    return plan_factors(input_size, step_factors(scale, step), center, view, scale, step)


def plan_factors(
    input_size: tuple[int, int],
    factors: Sequence[float],
    center: tuple[float, float] | None,
    view: tuple[int, int],
    scale: float | None = None,
    multiple: int = 4,
) -> ZoomPlan:
    """Plan a chain of the given step ``factors`` (each at most the backbone's scale).

    :func:`plan_zoom` splits a magnification into factors; the adaptive policy chooses
    them step by step and replans with the factors chosen so far. ``scale`` defaults
    to their product; ``multiple`` is what the view was rounded to (the backbone's scale).
    """
    w, h = input_size
    center = center if center is not None else (w / 2, h / 2)
    vw, vh = view
    # State 0 shows the whole input; when the view was rounded down it shows the
    # centred part of the input that keeps the view's aspect.
    if (vw, vh) == (w - w % multiple, h - h % multiple) and max(w, h) <= MAX_NATIVE_VIEW:
        left, top = (w - vw) // 2, (h - vh) // 2
        state0_box = Box(left, top, left + vw, top + vh)
    else:
        state0_box = Box(0.0, 0.0, float(w), float(h))

    steps: list[StepPlan] = []
    src_box, src_size = Box(0.0, 0.0, float(w), float(h)), (w, h)
    for i, factor in enumerate(factors, start=1):
        # Every crop fills the view after this step's factor. For step 1 the source is
        # the input at native resolution, whatever the size of state 0, so magnification
        # stays relative to the input's own pixels.
        cw, ch = max(1, round(vw / factor)), max(1, round(vh / factor))
        if cw > src_size[0] or ch > src_size[1]:
            raise OptionError(
                "view", f"{vw}x{vh} is more than {factor:g}x the {w}x{h} input: choose a smaller view or a larger input"
            )
        px = (center[0] - src_box.x0) * src_size[0] / src_box.width
        py = (center[1] - src_box.y0) * src_size[1] / src_box.height
        crop = Crop(_clamped_origin(px, cw, src_size[0]), _clamped_origin(py, ch, src_size[1]), cw, ch)
        sx, sy = src_box.width / src_size[0], src_box.height / src_size[1]
        box = Box(
            src_box.x0 + crop.left * sx,
            src_box.y0 + crop.top * sy,
            src_box.x0 + (crop.left + cw) * sx,
            src_box.y0 + (crop.top + ch) * sy,
        )
        steps.append(StepPlan(i, "input" if i == 1 else "previous", crop, box, factor))
        src_box, src_size = box, view
    return ZoomPlan((w, h), view, state0_box, tuple(steps), center, math.prod(factors) if scale is None else scale)
