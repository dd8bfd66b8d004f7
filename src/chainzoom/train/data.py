"""Training pairs: which image each step takes, its random crop and flip, and its degraded input.

Every random choice of step ``k`` comes from ``numpy.random.default_rng([seed, k])``,
and the image order from one seeded permutation per pass over the images: a step's
batch is a pure function of the seed and the step number. A resumed run therefore sees
exactly the batches an uninterrupted one would, with no data-loader state to save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from chainzoom.core.resample import resize
from chainzoom.errors import InputError
from chainzoom.io.atomic import atomic_write_json
from chainzoom.io.images import collect_inputs, load_image, save_image
from chainzoom.train.degradations import RESIZE_MODES, RealESRGANSettings, degrade


@dataclass
class Sample:
    """One training pair: HR crop, its degraded LR, and the LR upscaled back (the model's input), in ``[0, 1]``."""

    hr: torch.Tensor
    lr: torch.Tensor
    lr_up: torch.Tensor
    caption: str
    record: dict[str, Any]


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of (1-based) step ``step``: every draw of that step comes from it."""
    return np.random.default_rng([seed, step])


class ImageSet:
    """The training images, checked up front: each at least ``crop`` px a side, captions where asked."""

    def __init__(self, paths: Sequence[str], crop: int, captions: str) -> None:
        self.paths = collect_inputs(list(paths))
        self.crop = crop
        small = []
        for path in self.paths:
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except OSError as exc:
                raise InputError(f"{path}: not a readable image ({exc})") from None
            if min(width, height) < crop:
                small.append(f"{path.name} ({width}x{height})")
        if small:
            more = f" and {len(small) - 3} more" if len(small) > 3 else ""
            raise InputError(
                f"{len(small)} training image(s) are smaller than the {crop} px crop: {', '.join(small[:3])}{more}"
            )
        self.captions = [self._caption(path, captions) for path in self.paths]

    @staticmethod
    def _caption(path: Path, mode: str) -> str:
        if mode == "none":
            return ""
        sidecar = path.with_suffix(".txt")
        if not sidecar.is_file():
            raise InputError(f"{path}: --captions sidecar needs {sidecar.name} beside it")
        return " ".join(sidecar.read_text(encoding="utf-8").split())

    def __len__(self) -> int:
        return len(self.paths)

    def indices(self, seed: int, step: int, batch: int) -> list[int]:
        """The images of ``step``: consecutive places in per-pass seeded permutations."""
        chosen = []
        for place in range((step - 1) * batch, step * batch):
            epoch, offset = divmod(place, len(self))
            chosen.append(int(np.random.default_rng([seed, epoch, 1]).permutation(len(self))[offset]))
        return chosen

    def sample(self, index: int, degradation: str, rng: np.random.Generator, settings: RealESRGANSettings) -> Sample:
        """A random crop (and horizontal flip) of image ``index``, degraded and upscaled back."""
        rgb = load_image(self.paths[index], max_pixels=None).rgb
        height, width = rgb.shape[-2:]
        top = int(rng.integers(0, height - self.crop + 1))
        left = int(rng.integers(0, width - self.crop + 1))
        hr = rgb[:, top : top + self.crop, left : left + self.crop]
        flip = bool(rng.uniform() < 0.5)
        if flip:
            hr = hr.flip(-1)
        degraded = degrade(degradation, hr, rng, settings)
        if degradation == "bicubic":  # as at inference: Pillow bicubic
            mode = "bicubic"
            lr_up = resize(degraded.lr, (self.crop, self.crop), "bicubic")
        else:  # as OSEDiff's training: back to the crop size with a random mode
            mode = str(rng.choice(RESIZE_MODES))
            lr_up = F.interpolate(degraded.lr.unsqueeze(0), size=(self.crop,) * 2, mode=mode)[0].clamp(0.0, 1.0)
        record = {"image": self.paths[index].name, "top": top, "left": left, "flip": flip, "upscale": mode}
        return Sample(hr.contiguous(), degraded.lr, lr_up, self.captions[index], {**record, **degraded.record})


def write_preview(
    images: ImageSet, out: Path, count: int, seed: int, degradation: str, settings: RealESRGANSettings
) -> Path:
    """``count`` pairs as training would draw them (steps 1..count, one image each), plus what was drawn."""
    folder = out / "preview"
    records = []
    for number in range(1, count + 1):
        rng = step_rng(seed, number)
        index = images.indices(seed, number, 1)[0]
        sample = images.sample(index, degradation, rng, settings)
        stem = f"pair_{number:03d}"
        save_image(folder / f"{stem}_hr.png", sample.hr)
        save_image(folder / f"{stem}_lr.png", sample.lr)
        save_image(folder / f"{stem}_input.png", sample.lr_up)
        records.append({"pair": stem, **sample.record})
    atomic_write_json(folder / "pairs.json", records)
    return folder
