"""The official protocol: ``inference_coz.py``'s arithmetic, step for step (``--protocol official``).

chainzoom's own protocol resamples in float, rounds each state, zooms any point of an
image of any size at its own resolution. The official implementation does something
else, and a comparison with the paper's numbers needs exactly that:

- the input is converted to 8-bit RGB and ``resize_and_center_crop`` makes it a
  ``process_size`` square: the short side scaled to the size with the resized sides
  truncated by ``int()`` (so x and y scales differ on non-square inputs), Lanczos on the
  8-bit image (Pillow clips to 0..255 between its two passes), and a crop at the
  integer offsets ``(new - size) // 2``;
- every step of the chain crops the centre ``side // 4`` of the previous 8-bit state
  at the box ``((w - nw) // 2, (h - nh) // 2, (w + nw) // 2, (h + nh) // 2)`` and
  resizes it back to the process size with Pillow's 8-bit bicubic; that picture is the
  SR model's input and the prompter's zoomed view;
- the model's output is written with ``ToPILImage`` (``mul(255).byte()``: truncation,
  not rounding); the optional colour fix runs on those 8-bit pictures against the 8-bit
  bicubic input and truncates again; the next step reads that file;
- ``nearest`` and ``bicubic`` crop the integer box ``side // 4**k`` of state 0 first and
  resize it in 8 bits; ``onestep`` bicubic-resizes that crop to the process size and
  runs the model once.

A backbone that *restores* at its input's size after an internal bicubic x4 (the
one-step diffusion models, :class:`chainzoom.backbones.base.Restorer`) gets the 8-bit
bicubic picture, as officially. That capability is read from the model through any
wrapper (:func:`chainzoom.backbones.base.restorer_of`): every front-end hands over the
backbone inside the tiler, which is no restorer itself, so an ``isinstance`` test on it
would send the diffusion models down the plain-x4 route (a float bicubic crop, the colour
fix on float pictures). The restorer then runs on the whole ``process_size`` square,
untiled, as ``inference_coz.py`` runs it. Any other x4 backbone gets the integer crop
itself and its x4 output is truncated the same way (and, if it does not land on the
process size, resized to it with 8-bit bicubic): the official protocol has no such
models, so that is this module's reading of it. docs/parity.md lists what still differs
and why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from chainzoom.backbones.base import Backbone, restorer_of
from chainzoom.core.colorfix import color_fix
from chainzoom.core.geometry import Box, Crop, StepPlan, ZoomPlan
from chainzoom.core.states import ScaleState
from chainzoom.errors import OptionError
from chainzoom.io.images import LoadedImage, from_samples, to_pil
from chainzoom.prompts.base import PromptContext, Prompter

#: The official ``--process_size`` default: the side of every state.
DEFAULT_PROCESS_SIZE = 512
#: The official zoom per step (``--upscale``).
STEP = 4
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def official_square(image: LoadedImage, size: int = DEFAULT_PROCESS_SIZE) -> LoadedImage:
    """``resize_and_center_crop``: the 8-bit image, short side Lanczos-resized to ``size``, centre-cropped.

    The alpha channel is dropped and 16-bit samples are rounded to 8 bits, as
    ``Image.open(...).convert("RGB")`` does in the official script.
    """
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = int(w * scale), int(h * scale)
    picture = to_pil(image.rgb).resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    square = picture.crop((left, top, left + size, top + size))
    return LoadedImage(_tensor(square), None, 8, image.path)


def square_box(input_size: tuple[int, int], size: int = DEFAULT_PROCESS_SIZE) -> Box:
    """The region of the original input that :func:`official_square` keeps, in its pixels."""
    w, h = input_size
    scale = size / min(w, h)
    new_w, new_h = int(w * scale), int(h * scale)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = w / new_w, h / new_h
    return Box(left * sx, top * sy, (left + size) * sx, (top + size) * sy)


def steps_for(scale: float) -> int:
    """The official ``--rec_num`` for a total magnification: ``scale`` must be ``4**k``."""
    k = round(math.log(scale, STEP)) if scale > 1 else 0
    if k < 1 or STEP**k != scale:
        raise OptionError(
            "scale", f"protocol official zooms in 4x steps: the scale must be 4, 16, 64, ..., got {scale:g}"
        )
    return k


def centre_crop(size: tuple[int, int], divisor: int) -> Crop:
    """The official centre box of ``size // divisor`` inside an image of ``size``."""
    w, h = size
    nw, nh = w // divisor, h // divisor
    left, top = (w - nw) // 2, (h - nh) // 2
    return Crop(left, top, (w + nw) // 2 - left, (h + nh) // 2 - top)


def official_plan(size: int, scale: float, mode: str) -> ZoomPlan:
    """Every box of an official run on the ``size`` square (the preprocessed input).

    The chain crops the centre quarter of the previous state at every step; the
    baselines crop ``size // 4**k`` of state 0 directly, so on sides that 4**k does not
    divide their boxes differ slightly from the chain's, exactly as officially.
    """
    k = steps_for(scale)
    view = (size, size)
    state0 = Box(0.0, 0.0, float(size), float(size))
    steps: list[StepPlan] = []
    box = state0
    for index in range(1, k + 1):
        if mode == "chain":
            crop = centre_crop(view, STEP)
            outer, outer_size = box, view
        else:
            crop = centre_crop(view, STEP**index)
            outer, outer_size = state0, view
        if crop.width < 1 or crop.height < 1:
            raise OptionError(
                "scale", f"x{scale:g} crops less than a pixel of the {size}px square: use a larger --process-size"
            )
        sx, sy = outer.width / outer_size[0], outer.height / outer_size[1]
        box = Box(
            outer.x0 + crop.left * sx,
            outer.y0 + crop.top * sy,
            outer.x0 + (crop.left + crop.width) * sx,
            outer.y0 + (crop.top + crop.height) * sy,
        )
        steps.append(StepPlan(index, "previous" if mode == "chain" else "state0", crop, box, float(STEP)))
    return ZoomPlan(view, view, state0, tuple(steps), (size / 2, size / 2), float(scale))


def official_states(
    mode: str,
    image: LoadedImage,
    plan: ZoomPlan,
    backbone: Backbone | None,
    prompter: Prompter | None,
    done: Sequence[ScaleState] = (),
) -> Iterator[ScaleState]:
    """Yield the states of ``mode`` under the official protocol, continuing after ``done``.

    ``image`` is the preprocessed square (:func:`official_square`); every state is 8-bit.
    """
    states = list(done)
    if not states:
        states.append(ScaleState(0, image.rgb, plan.state0_box, plan.magnification(0)))
        yield states[0]
    state0 = to_pil(states[0].image)
    for step in plan.steps[len(states) - 1 :]:
        started = time.perf_counter()
        prompt, prompt_seconds, backbone_seconds = None, 0.0, 0.0
        if mode in _FILTERS:
            picture = _crop(state0, step.crop).resize(plan.view, _FILTERS[mode])
        else:
            if backbone is None:
                raise OptionError("backbone", f"mode {mode} needs a backbone")
            previous = states[-1].image
            source = to_pil(previous) if mode == "chain" else state0
            wide = previous if mode == "chain" else states[0].image
            crop = _crop(source, step.crop)
            view = crop.resize(plan.view, Image.Resampling.BICUBIC)
            if prompter is not None:
                prompt_started = time.perf_counter()
                prompt = prompter.describe(PromptContext(step.index, wide, _tensor(view)))
                prompt_seconds = time.perf_counter() - prompt_started
            backbone_started = time.perf_counter()
            picture = _super_resolve(backbone, crop, view, prompt or "", mode)
            backbone_seconds = time.perf_counter() - backbone_started
        state = ScaleState(
            step.index,
            _tensor(picture),
            step.box,
            plan.magnification(step.index),
            prompt,
            None,
            {"prompt": prompt_seconds, "backbone": backbone_seconds, "total": time.perf_counter() - started},
        )
        states.append(state)
        yield state


def _super_resolve(backbone: Backbone, crop: Image.Image, view: Image.Image, prompt: str, mode: str) -> Image.Image:
    """One SR pass the official way: the model, ``ToPILImage`` truncation, the colour fix, truncation.

    ``backbone`` may be a wrapper (the tiler every front-end builds): the restorer it
    wraps, if any, gets the 8-bit bicubic ``view`` directly, so a wrapped model gives
    the same bytes as the bare one.
    """
    restorer = restorer_of(backbone)
    if restorer is not None:
        output = truncate(restorer.restore(_tensor(view), prompt))
        method = restorer.color_fix_method
        if method != "none":
            output = truncate(color_fix(_tensor(output), _tensor(view), method))
        return output
    # an x4 model: the crop itself (onestep: the crop bicubic-resized to a quarter of the view)
    if mode == "onestep":
        crop = crop.resize((view.width // backbone.scale, view.height // backbone.scale), Image.Resampling.BICUBIC)
    output = truncate(backbone.upscale(_tensor(crop), prompt))
    if output.size != view.size:
        output = output.resize(view.size, Image.Resampling.BICUBIC)
    return output


def truncate(image: torch.Tensor) -> Image.Image:
    """torchvision's ``ToPILImage`` on a float tensor: ``mul(255).byte()``, truncation toward zero."""
    samples = image.float().mul(255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(samples, "RGB")


def _crop(picture: Image.Image, crop: Crop) -> Image.Image:
    return picture.crop((crop.left, crop.top, crop.left + crop.width, crop.top + crop.height))


def _tensor(picture: Image.Image) -> torch.Tensor:
    """An 8-bit picture as chainzoom's float tensor (``ToTensor``: samples / 255)."""
    return from_samples(np.asarray(picture.convert("RGB")), 8)
