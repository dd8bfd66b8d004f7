"""The Python API: ``chainzoom.zoom(...)`` returns the list of scale-states.

The CLI is a thin layer over these functions; everything it can do is reachable
from Python with the same names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from chainzoom.backbones import DEFAULT_BACKBONE, DIFFUSION_BACKBONES, Backbone, create_backbone
from chainzoom.backbones.bundled.models import BUNDLED
from chainzoom.core.geometry import Box, ZoomPlan, default_view, plan_zoom
from chainzoom.core.resample import resize
from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError
from chainzoom.io.images import DEFAULT_MAX_PIXELS, LoadedImage, from_pil, load_image
from chainzoom.pipeline.chain import MODES, zoom_baseline, zoom_chain
from chainzoom.pipeline.tiling import DEFAULT_OVERLAP, TiledBackbone
from chainzoom.prompts import Prompter, create_prompter
from chainzoom.registry import Runtime, split_spec

NCNN_BACKBONES = tuple(BUNDLED)

#: Side of the square the official implementation zooms in (``--square``).
OFFICIAL_SQUARE = 512

ImageInput = str | Path | Image.Image | LoadedImage | torch.Tensor


def as_loaded(image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Accept a path, a PIL image, a LoadedImage or a ``[3,H,W]`` tensor in ``[0,1]``."""
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return from_pil(image, max_pixels=max_pixels)
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return LoadedImage(image.float().clamp(0, 1), None, 8, None)
    raise TypeError("image must be a path, a PIL image, a LoadedImage or a [3,H,W] tensor")


def square_crop(image: LoadedImage, side: int = OFFICIAL_SQUARE) -> LoadedImage:
    """The official preprocessing: the centred square of the image, resized to ``side`` (Lanczos)."""
    w, h = image.size
    s = min(w, h)
    box = Box((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    alpha = resize(image.alpha, (side, side), "lanczos", box) if image.alpha is not None else None
    return LoadedImage(resize(image.rgb, (side, side), "lanczos", box), alpha, image.bit_depth, image.path)


def resolve_backbone(backbone: str | Backbone, runtime: Runtime) -> Backbone:
    return build_backbone(backbone, runtime) if isinstance(backbone, str) else backbone


def build_backbone(
    spec: str,
    runtime: Runtime,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    engine: str = "torch",
    **options,
) -> Backbone:
    """Create the backbone ``spec`` names, tiled (``tile=None``: sized from free memory).

    ``engine="ncnn"`` runs a bundled model through the ncnn runtime instead of torch, and
    ``engine="compile"`` through ``torch.compile``.
    ``options`` go to the diffusion backbones (``efficient_memory``, ``color_fix``...).
    """
    name = split_spec(spec)[0]
    if options and name not in DIFFUSION_BACKBONES:
        raise ChainZoomError(
            f"{', '.join(sorted(options))} applies only to the diffusion backbones "
            f"({', '.join(DIFFUSION_BACKBONES)}), not {name!r}"
        )
    if engine == "torch":
        inner = create_backbone(spec, runtime, **options)
    elif spec in NCNN_BACKBONES:
        inner = create_backbone(spec, runtime, engine=engine)
    else:
        raise ChainZoomError(
            f"--runtime {engine} works only with the bundled models ({', '.join(NCNN_BACKBONES)}), not {spec!r}"
        )
    return TiledBackbone(inner, tile, overlap, runtime.device)


def resolve_prompter(prompter: str | Prompter | None, runtime: Runtime) -> Prompter | None:
    return create_prompter(prompter, runtime) if isinstance(prompter, str) else prompter


def make_plan(
    image: LoadedImage,
    scale: float,
    center: tuple[float, float] = (0.5, 0.5),
    view: tuple[int, int] | None = None,
    step: int = 4,
) -> ZoomPlan:
    """Plan the chain with ``center`` given as fractions of the width and height."""
    w, h = image.size
    if not all(0.0 <= c <= 1.0 for c in center):
        raise ChainZoomError(f"center {center} is outside the image: fractions must be in [0, 1]")
    return plan_zoom((w, h), scale, (center[0] * w, center[1] * h), view or default_view((w, h), step), step)


def run_states(
    mode: str,
    image: LoadedImage,
    plan: ZoomPlan,
    backbone: Backbone | None,
    prompter: Prompter | None,
    done: Sequence[ScaleState] = (),
) -> Iterator[ScaleState]:
    """The state iterator for ``mode`` (see :data:`chainzoom.pipeline.chain.MODES`), after ``done``."""
    if mode not in MODES:
        raise ChainZoomError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if mode == "chain":
        if backbone is None:
            raise ChainZoomError("the chain needs a backbone")
        return zoom_chain(image, plan, backbone, prompter, done)
    return zoom_baseline(mode, image, plan, backbone, prompter, done)


def zoom(
    image: ImageInput,
    scale: float = 256,
    center: tuple[float, float] = (0.5, 0.5),
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompter: str | Prompter | None = None,
    *,
    mode: str = "chain",
    view: tuple[int, int] | None = None,
    square: bool = False,
    runtime: Runtime | None = None,
) -> list[ScaleState]:
    """Zoom ``scale`` times into ``image`` around ``center`` and return every scale-state.

    ``center`` is in fractions of width and height. ``backbone`` and ``prompter``
    are registry specs (``"realesrgan"``, ``"fixed:a cat"``) or objects. State 0 is
    the input at the view size; the last state is magnified ``scale`` times
    relative to the input's own pixels.
    """
    runtime = runtime or Runtime()
    loaded = as_loaded(image)
    if square:
        loaded = square_crop(loaded)
    needs_model = mode in ("chain", "direct")
    model = resolve_backbone(backbone, runtime) if needs_model else None
    plan = make_plan(loaded, scale, center, view, model.scale if model else 4)
    return list(run_states(mode, loaded, plan, model, resolve_prompter(prompter, runtime)))
