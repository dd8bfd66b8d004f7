"""Backbones: every model that can make one zoom step, with its facts.

Add a family by adding a subpackage and one ``BACKBONES.register`` entry here (or, from
another package, an entry point in the ``chainzoom.backbones`` group); the family's
module is imported only when a user picks it, so optional dependencies stay optional
and listing them imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chainzoom.registry import BackboneEntry, BackboneFacts, Registry
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from chainzoom.backbones.base import Backbone

#: Working memory of a pure interpolation per input pixel: 16 float32 RGB output pixels
#: and the input, with room for the resampler's temporaries.
INTERPOLATION_BYTES_PER_INPUT_PIXEL = 1024
#: One OSEDiff step's activations per input pixel at float32: 1.2 GiB for a 128x128 input
#: (peak minus resident, SD3-medium sizes on an H100, docs/diffusion.md), about 77 KiB.
DIFFUSION_BYTES_PER_INPUT_PIXEL = 80 * 1024
DIFFUSION_OPTIONS = ("efficient_memory", "color_fix", "latent", "vae_tiling")

BACKBONES: Registry[Backbone, BackboneEntry] = Registry("backbone", "chainzoom.backbones", BackboneEntry)
for _name, _description, _licence in (
    ("realesrgan", "Real-ESRGAN x4plus, bundled: the default, general photos", "BSD-3-Clause"),
    ("realsr", "RealSR DF2K x4, bundled: real-world photos", "MIT"),
):
    BACKBONES.register(
        BackboneEntry(
            _name,
            f"chainzoom.backbones.bundled.models:create_{_name}",
            _description,
            # bf16 on CPUs with native bf16: about 2x float32, within 2.3 levels (docs/performance.md)
            facts=BackboneFacts(engines=("torch", "compile", "ncnn"), licence=_licence, cpu_bf16=True),
        )
    )
for _method in ("nearest", "bicubic", "lanczos"):
    BACKBONES.register(
        BackboneEntry(
            _method,
            f"chainzoom.backbones.interpolation:create_{_method}",
            f"{_method} interpolation 4x, no model",
            facts=BackboneFacts(
                bytes_per_input_pixel=INTERPOLATION_BYTES_PER_INPUT_PIXEL, licence="n/a", dtypes=("float32",)
            ),
        )
    )
BACKBONES.register(
    BackboneEntry(
        "spandrel",
        "chainzoom.backbones.spandrel.backbone:create_spandrel",
        "any SR model file spandrel recognises (.safetensors/.pth/.pt/.ckpt); steps at the model's scale",
        argument="PATH",
        required=True,
        extra="spandrel",
        facts=BackboneFacts(scale=None, licence="the model file's"),
    )
)
for _name, _module, _description, _argument, _multiple, _licence, _options in (
    (
        "osediff-sd3",
        "sd3",
        "OSEDiff one-step diffusion SR on SD3 medium, Chain-of-Zoom's backbone",
        "BASE[,lora=model_20001.pkl][,vae=vae_encoder_20001.pt]",
        16,
        "SD3 medium: Stability AI Community License",
        # numerics=official: the official inference's precisions (--protocol official sets it)
        (*DIFFUSION_OPTIONS, "numerics"),
    ),
    (
        "osediff-sd21",
        "sd21",
        "OSEDiff one-step diffusion SR on SD 2.1-base",
        "BASE,ckpt=osediff.pkl",
        8,
        "SD 2.1: CreativeML Open RAIL++-M",
        DIFFUSION_OPTIONS,
    ),
):
    BACKBONES.register(
        BackboneEntry(
            _name,
            f"chainzoom.backbones.diffusion.{_module}:create",
            _description,
            argument=_argument,
            required=True,
            extra="diffusion",
            facts=BackboneFacts(
                text_aware=True,
                options=_options,
                bytes_per_input_pixel=DIFFUSION_BYTES_PER_INPUT_PIXEL,
                size_multiple=_multiple,
                licence=f"the base model's ({_licence})",
            ),
        )
    )

DEFAULT_BACKBONE = "realesrgan"


def create_backbone(spec: str, runtime: Runtime | None = None, **options: Any) -> Backbone:
    """Build a backbone from a spec string such as ``realesrgan`` or ``spandrel:PATH``."""
    return BACKBONES.create(spec, runtime, **options)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "create_backbone"]
