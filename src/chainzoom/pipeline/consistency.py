"""Consistency after each step: keep a step's output true to what it was made from.

Errors compound over a long chain (the paper's first open question): a colour cast a
backbone adds at every step grows step after step. Each method here corrects a step's
output against that step's own input, for any backbone:

- ``wavelet`` / ``adain``: low-frequency anchoring to the step's input (its crop,
  bicubic-upsampled to the output): the wavelet or AdaIN colour fixes of the diffusion
  backbones, for every backbone;
- ``backprojection``: data consistency, so that the output downscaled (bicubic,
  antialiased) matches the crop it came from: ``x += up(crop - down(x))``, a bounded
  number of times (:data:`BACKPROJECTION_ITERATIONS`);
- ``anchor``: the output's per-channel mean set to that of the *input image* at the
  step's box (x0's region, interpolated), so colour drift cannot compound from step to
  step; the spread is left alone (x0's region is far smoother than the detail a step
  adds, so matching it would erase that detail).

``none`` changes nothing. The methods see the state before it is quantized.

In full-image mode a level is the whole image, made tile by tile: the local methods run on
each tile, and ``anchor`` runs on the assembled level as a smooth shift field
(:func:`anchor_shift`), the drift of the level's colour against x0's averaged over a window
instead of per tile, so that no tile edge shows.
"""

from __future__ import annotations

import torch

from chainzoom.core.colorfix import WAVELET_LEVELS, adain_color_fix, wavelet_color_fix
from chainzoom.core.geometry import Box
from chainzoom.core.resample import resize
from chainzoom.core.vocabulary import CONSISTENCY
from chainzoom.errors import OptionError

METHODS = CONSISTENCY
#: Back-projection iterations: the downscale error falls fast and then oscillates at the
#: level of the kernels' mismatch (bicubic up, antialiased bicubic down).
BACKPROJECTION_ITERATIONS = 3


def check_method(method: str) -> None:
    if method not in METHODS:
        raise OptionError("consistency", f"must be one of {', '.join(METHODS)}, got {method!r}")


def method_record(method: str, full: bool = False) -> dict[str, object]:
    """The method and its parameters, as a run's manifest records them (``full``: per level)."""
    check_method(method)
    step_input = "the step's input, bicubic to the output"
    records: dict[str, dict[str, object]] = {
        "none": {},
        "wavelet": {"reference": step_input, "wavelet_levels": WAVELET_LEVELS},
        "adain": {"reference": step_input, "statistics": "per-channel mean and standard deviation"},
        "backprojection": {
            "iterations": BACKPROJECTION_ITERATIONS,
            "downscale": "bicubic, antialiased (Pillow)",
            "upscale": "bicubic",
        },
        "anchor": {"reference": "the input image at the step's box, bicubic", "statistics": "per-channel mean"},
    }
    record = {"method": method, **records[method]}
    if full and method != "none":
        record["applied"] = "per level, as a shift field" if method == "anchor" else "per tile, before blending"
        if method == "anchor":
            record["window"] = "a tile-sized patch of the level, in input px (levels[].anchor_window)"
    return record


def make_consistent(
    method: str, output: torch.Tensor, crop: torch.Tensor, image: torch.Tensor, box: Box
) -> torch.Tensor:
    """``output`` (a step's ``[3,H,W]`` result) made consistent with ``crop`` (its input) or,
    for ``anchor``, with the input ``image``'s region ``box``; clamped to ``[0, 1]``."""
    check_method(method)
    if method != "anchor":
        return make_locally_consistent(method, output, crop)
    size = (output.shape[-1], output.shape[-2])
    region = resize(image, size, "bicubic", box)
    shift = region.float().mean((1, 2), keepdim=True) - output.float().mean((1, 2), keepdim=True)
    return (output.float() + shift).clamp_(0.0, 1.0)


def make_locally_consistent(method: str, output: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
    """The methods that need only the step's own input (all but ``anchor``): what a full-image
    tile can do with its own crop."""
    if method == "none":
        return output
    if method in ("wavelet", "adain"):
        reference = resize(crop, (output.shape[-1], output.shape[-2]), "bicubic")
        fix = wavelet_color_fix if method == "wavelet" else adain_color_fix
        return fix(output.float(), reference.float()).clamp_(0.0, 1.0)
    if method == "backprojection":
        return back_project(output, crop)
    raise OptionError("consistency", f"{method} needs more than the step's own input")


def anchor_shift(image: torch.Tensor, thumbnail: torch.Tensor, window: int) -> torch.Tensor:
    """What a full-image level needs added, at the input's pixels: ``image`` (x0, ``[3,H,W]``)
    minus ``thumbnail`` (the level area-averaged to x0's size), each box-averaged over
    ``window`` px, so the shift is the level's colour drift at that scale and smooth across tiles.

    ``window`` is the input footprint of a tile-sized patch of the level: the scale at which
    ``anchor`` matches means in local mode, where each state is a view of that size.
    """
    return box_blur(image.float(), window) - box_blur(thumbnail.float(), window)


def box_blur(image: torch.Tensor, window: int) -> torch.Tensor:
    """The mean of ``image`` over a ``window`` px square centred on each pixel (shrunk at the
    borders to the pixels inside), with summed-area tables: constant cost in the window."""
    radius = max(window, 1) // 2
    out = image
    for axis in (1, 2):
        length = out.shape[axis]
        sums = torch.nn.functional.pad(out.double().cumsum(axis).movedim(axis, -1), (1, 0)).movedim(-1, axis)
        index = torch.arange(length)
        lo, hi = (index - radius).clamp(min=0), (index + radius + 1).clamp(max=length)
        span = (sums.index_select(axis, hi) - sums.index_select(axis, lo)).float()
        shape = [1, 1, 1]
        shape[axis] = length
        out = span / (hi - lo).float().view(shape)
    return out


def back_project(output: torch.Tensor, crop: torch.Tensor, iterations: int = BACKPROJECTION_ITERATIONS) -> torch.Tensor:
    """Iterative back-projection: push ``output`` towards downscaling to ``crop``."""
    size = (output.shape[-1], output.shape[-2])
    small = (crop.shape[-1], crop.shape[-2])
    x = output.float().clone()
    for _ in range(iterations):
        residual = crop.float() - resize(x, small, "bicubic")
        x = (x + resize_signed(residual, size)).clamp_(0.0, 1.0)
    return x


def downscale_error(output: torch.Tensor, crop: torch.Tensor) -> float:
    """Mean absolute difference between ``output`` downscaled to the crop's size and the crop."""
    small = resize(output, (crop.shape[-1], crop.shape[-2]), "bicubic")
    return float((small - crop).abs().mean())


def resize_signed(
    residual: torch.Tensor, size: tuple[int, int], method: str = "bicubic", box: Box | None = None
) -> torch.Tensor:
    """Resize a residual in ``[-1, 1]`` (or its ``box``; ``resize`` clamps to ``[0, 1]``, so shift it there and back)."""
    return resize((residual + 1.0) / 2.0, size, method, box) * 2.0 - 1.0
