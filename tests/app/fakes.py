"""A backbone slow enough to cancel in a browser: nearest-neighbour 4x after a pause per step."""

from __future__ import annotations

import time

import torch

from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.registry import BackboneEntry, BackboneFacts
from chainzoom.runtime import Runtime

#: Seconds each step waits: long enough for a click to land between two states.
PAUSE = 1.0


class SlowBackbone(Backbone):
    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        time.sleep(PAUSE)
        return image.repeat_interleave(4, -1).repeat_interleave(4, -2)

    def card(self) -> ModelCard:
        return ModelCard("slow", "waits, then nearest 4x (a test backbone)", "nearest", 4, parameters=0)


def create_slow(argument: str | None, runtime: Runtime) -> SlowBackbone:
    return SlowBackbone()


SLOW = BackboneEntry(
    "slow", "tests.app.fakes:create_slow", "test backbone: a pause, then nearest 4x", facts=BackboneFacts()
)
