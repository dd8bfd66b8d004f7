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
