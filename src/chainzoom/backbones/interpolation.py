"""Interpolation as a backbone: the no-model baselines of the chain."""

from __future__ import annotations

import torch

from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.core.resample import resize
from chainzoom.runtime import Runtime


class InterpolationBackbone(Backbone):
    """Upscales with a Pillow filter; reads no prompt, has no weights."""

    def __init__(self, method: str, scale: int = 4) -> None:
        self.method = method
        self.scale = scale

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        height, width = image.shape[-2:]
        return resize(image, (width * self.scale, height * self.scale), self.method)

    def card(self) -> ModelCard:
        return ModelCard(
            id=self.method,
            description=f"{self.method} interpolation (no model)",
            architecture="interpolation",
            scale=self.scale,
            parameters=0,
        )


def create_nearest(argument: str | None, runtime: Runtime) -> InterpolationBackbone:
    return InterpolationBackbone("nearest")


def create_bicubic(argument: str | None, runtime: Runtime) -> InterpolationBackbone:
    return InterpolationBackbone("bicubic")


def create_lanczos(argument: str | None, runtime: Runtime) -> InterpolationBackbone:
    return InterpolationBackbone("lanczos")
