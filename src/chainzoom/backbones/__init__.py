"""Backbones: registry of every model that can make one 4x step.

Add a family by adding a module and one ``BACKBONES.register`` line; the module is
imported only when a user picks it, so optional dependencies stay optional.
"""

from __future__ import annotations

from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.registry import Registry, Runtime

BACKBONES: Registry[Backbone] = Registry("backbone")
BACKBONES.register(
    "realesrgan",
    "chainzoom.backbones.bundled.models:create_realesrgan",
    "Real-ESRGAN x4plus, bundled (BSD-3): the default, general photos",
)
BACKBONES.register(
    "realsr",
    "chainzoom.backbones.bundled.models:create_realsr",
    "RealSR DF2K x4, bundled (MIT): real-world photos",
)
BACKBONES.register("nearest", "chainzoom.backbones.interpolation:create_nearest", "nearest-neighbour 4x, no model")
BACKBONES.register("bicubic", "chainzoom.backbones.interpolation:create_bicubic", "bicubic 4x, no model")
BACKBONES.register("lanczos", "chainzoom.backbones.interpolation:create_lanczos", "Lanczos 4x, no model")
BACKBONES.register(
    "spandrel",
    "chainzoom.backbones.spandrel.backbone:create_spandrel",
    "any SR model file spandrel recognises (.safetensors/.pth/.pt/.ckpt); steps at the model's scale: spandrel:PATH",
    needs_argument=True,
    extra="spandrel",
)
BACKBONES.register(
    "osediff-sd3",
    "chainzoom.backbones.diffusion.sd3:create",
    "OSEDiff one-step diffusion SR on SD3 medium, Chain-of-Zoom's backbone (reads the prompt): "
    "osediff-sd3:BASE[,lora=model_20001.pkl][,vae=vae_encoder_20001.pt]",
    needs_argument=True,
    extra="diffusion",
)
BACKBONES.register(
    "osediff-sd21",
    "chainzoom.backbones.diffusion.sd21:create",
    "OSEDiff one-step diffusion SR on SD 2.1-base (reads the prompt): osediff-sd21:BASE,ckpt=osediff.pkl",
    needs_argument=True,
    extra="diffusion",
)

DEFAULT_BACKBONE = "realesrgan"
#: Backbones that take the one-step diffusion options (``--efficient-memory``, ``--color-fix``).
DIFFUSION_BACKBONES = ("osediff-sd3", "osediff-sd21")


def create_backbone(spec: str, runtime: Runtime | None = None, **options) -> Backbone:
    """Build a backbone from a spec string such as ``realesrgan`` or ``spandrel:PATH``."""
    return BACKBONES.create(spec, runtime, **options)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "DIFFUSION_BACKBONES", "Backbone", "ModelCard", "create_backbone"]
