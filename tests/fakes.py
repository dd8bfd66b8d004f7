"""Fake components for tests: a backbone that counts how often it is built and run."""

from __future__ import annotations

import torch

from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.registry import BackboneEntry, BackboneFacts
from chainzoom.runtime import Runtime

BUILT: list[str] = []


class CountingBackbone(Backbone):
    """Nearest-neighbour 4x that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        self.calls += 1
        return image.repeat_interleave(4, -1).repeat_interleave(4, -2)

    def card(self) -> ModelCard:
        return ModelCard("counting", "counts its builds and calls", "nearest", 4, parameters=0)


def create_counting(argument: str | None, runtime: Runtime) -> CountingBackbone:
    BUILT.append(runtime.device)
    return CountingBackbone()


COUNTING = BackboneEntry(
    "counting",
    "tests.fakes:create_counting",
    "test backbone that counts its builds",
    facts=BackboneFacts(bytes_per_input_pixel=1024),
)


class DetailBackbone(Backbone):
    """Nearest-neighbour 4x: hard edges, so the most high-frequency energy (the policy tests' "better")."""

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        return image.repeat_interleave(4, -1).repeat_interleave(4, -2)

    def card(self) -> ModelCard:
        return ModelCard("detail", "nearest 4x", "nearest", 4, parameters=0)


class BlurBackbone(Backbone):
    """Bicubic 4x, then a 9x9 box blur: a copy with less detail than interpolation itself."""

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        from chainzoom.core.resample import resize

        big = resize(image, (image.shape[-1] * 4, image.shape[-2] * 4), "bicubic")
        padded = torch.nn.functional.pad(big[None], (4, 4, 4, 4), mode="replicate")
        return torch.nn.functional.avg_pool2d(padded, 9, stride=1)[0]

    def card(self) -> ModelCard:
        return ModelCard("blur", "blurred bicubic 4x", "bicubic+blur", 4, parameters=0)


DETAIL = BackboneEntry("detail", "tests.fakes:create_detail", "test backbone: nearest 4x")
BLUR = BackboneEntry("blur", "tests.fakes:create_blur", "test backbone: blurred bicubic 4x")


def create_detail(argument: str | None, runtime: Runtime) -> DetailBackbone:
    return DetailBackbone()


def create_blur(argument: str | None, runtime: Runtime) -> BlurBackbone:
    return BlurBackbone()


def detail_deficit(image: torch.Tensor) -> float:
    """A no-reference score, lower is better: minus the mean absolute Laplacian (more detail, lower)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(3, 1, 3, 3)
    laplacian = torch.nn.functional.conv2d(image[None], kernel, groups=3)
    return -float(laplacian.abs().mean())
