"""``chainzoom train-backbone``'s typed options, checked before anything loads or is written.

Kept beside the trainer rather than in :mod:`chainzoom.config` because only training uses
it; it follows the same pattern (a frozen dataclass whose fields are exactly the
command's flags, built by :func:`chainzoom.config.from_mapping` from TOML or flags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from chainzoom.config import check_out
from chainzoom.errors import OptionError
from chainzoom.runtime import Runtime
from chainzoom.train.settings import DEGRADATIONS, RealESRGANSettings

#: OSEDiff's loss weights: MSE 1, LPIPS 2, VSD (distribution matching) 1.
DEFAULT_LOSS = "mse=1,lpips=2,vsd=1"
LOSS_TERMS = ("mse", "lpips", "vsd")
SCHEDULES = ("constant", "coarse-to-fine")
CAPTIONS = ("none", "sidecar")
#: sd3: Chain-of-Zoom's backbone (``osediff-sd3``); sd21: the original OSEDiff (``osediff-sd21``).
VARIANTS = {"sd3": "StableDiffusion3Pipeline", "sd21": "StableDiffusionPipeline"}
#: The paper's schedule: 25K steps of random degradations, then 20K 4x-specific ones.
COARSE_SHARE = 25 / 45
#: VAE factor 8 times the SD3 transformer's patch 2.
CROP_MULTIPLE = 16


def parse_loss(spec: str) -> dict[str, float]:
    """``"mse=1,lpips=2,vsd=1"`` -> weights; unnamed terms weigh 0."""
    weights = dict.fromkeys(LOSS_TERMS, 0.0)
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise OptionError("loss", f"unknown term {name!r} (known: {', '.join(LOSS_TERMS)})")
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight >= 0):
            raise OptionError("loss", f"{part!r}: each term needs a weight >= 0, as in {DEFAULT_LOSS}")
        weights[name] = weight
    if not any(weights.values()):
        raise OptionError("loss", f"every weight is 0: nothing to train (e.g. {DEFAULT_LOSS})")
    return weights


@dataclass(frozen=True)
class TrainBackboneConfig:
    """``chainzoom train-backbone``: OSEDiff on SD3 (LoRA on the transformer and the VAE encoder), or on SD 2.1."""

    base: str | None = None
    variant: str = "sd3"
    images: tuple[str, ...] = ()
    out: str = "runs/train"
    steps: int = 20000
    batch: int = 2
    lr: float = 5e-5
    lora_rank: int = 4
    degradation: str = "realesrgan"
    schedule: str = "constant"
    loss: str = DEFAULT_LOSS
    vgg: str | None = None
    lpips_heads: str | None = None
    crop: int = 512
    captions: str = "none"
    subtract_shift: bool = False
    checkpoint_every: int = 5000
    preview: int = 0
    resume: bool = False
    gradient_checkpointing: bool = False
    quiet: bool = False
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        if isinstance(self.images, list):
            object.__setattr__(self, "images", tuple(self.images))
        self.check()

    @property
    def weights(self) -> dict[str, float]:
        return parse_loss(self.loss)

    def degradation_at(self, step: int) -> str:
        """The degradation of (1-based) ``step``: the schedule's choice."""
        if self.schedule == "coarse-to-fine":
            return "realesrgan" if step <= math.ceil(self.steps * COARSE_SHARE) else "bicubic"
        return self.degradation

    def check(self) -> None:
        if not self.images:
            raise OptionError("images", "name at least one image folder or file (--images DIR)")
        if self.base is None and not self.preview:
            raise OptionError("base", "name the SD3 medium diffusers folder to train on (--base SD3_DIR)")
        for name in ("steps", "batch", "lora_rank", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.preview < 0:
            raise OptionError("preview", f"must be 0 or more, got {self.preview}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError("lr", f"must be positive, got {self.lr}")
        if self.degradation not in DEGRADATIONS:
            raise OptionError("degradation", f"must be one of {', '.join(DEGRADATIONS)}, got {self.degradation!r}")
        if self.schedule not in SCHEDULES:
            raise OptionError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule == "coarse-to-fine" and self.degradation != "realesrgan":
            raise OptionError("degradation", "is set by --schedule coarse-to-fine (realesrgan, then bicubic)")
        if self.variant not in VARIANTS:
            raise OptionError("variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "sd21" and self.subtract_shift:
            raise OptionError("subtract_shift", "does not apply to --variant sd21 (its VAE has no shift)")
        if self.captions not in CAPTIONS:
            raise OptionError("captions", f"must be one of {', '.join(CAPTIONS)}, got {self.captions!r}")
        if self.crop % CROP_MULTIPLE or self.crop < CROP_MULTIPLE:
            raise OptionError("crop", f"must be a positive multiple of {CROP_MULTIPLE}, got {self.crop}")
        uses_realesrgan = self.schedule == "coarse-to-fine" or self.degradation == "realesrgan"
        smallest = RealESRGANSettings().min_side
        if uses_realesrgan and self.crop < smallest:
            raise OptionError("crop", f"must be at least {smallest} px for the Real-ESRGAN degradation")
        weights = self.weights
        if weights["lpips"] > 0 and not self.preview:
            if self.vgg is None:
                raise OptionError(
                    "vgg", "LPIPS needs VGG16 weights (torchvision's vgg16-397923af.pth), or --loss ...,lpips=0"
                )
            for name in ("vgg", "lpips_heads"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise OptionError(name, f"{path} is not a file")
        if self.runtime.engine != "torch":
            raise OptionError("engine", f"{self.runtime.engine} does not apply: training runs on the torch engine")
        for name in ("tile", "tile_overlap"):
            if getattr(self.runtime, name) is not None:
                raise OptionError(name, "does not apply to training (it runs on whole crops)")
        check_out(self.out)
