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
"""

from __future__ import annotations

import torch

from chainzoom.core.colorfix import adain_color_fix, wavelet_color_fix
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


def resize_signed(residual: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a residual in ``[-1, 1]`` (``resize`` clamps to ``[0, 1]``, so shift it there and back)."""
    return resize((residual + 1.0) / 2.0, size, "bicubic") * 2.0 - 1.0
