"""Consistency after each step (issue 14): each method against a backbone that drifts."""

from __future__ import annotations

import pytest
import torch

import chainzoom
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.core.resample import resize
from chainzoom.pipeline.consistency import back_project, downscale_error

CAST = torch.tensor([0.06, -0.04, 0.05]).view(3, 1, 1)


class Casting(Backbone):
    """Bicubic 4x plus a colour cast at every step: the drift a real backbone shows, exaggerated."""

    def upscale(self, image, prompt=""):
        h, w = image.shape[-2:]
        return (resize(image, (w * 4, h * 4), "bicubic") + CAST).clamp(0, 1)

    def card(self):
        return ModelCard("casting", "test", "bicubic + cast", 4)


def smooth_image() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    return torch.stack([0.3 + 0.3 * x, 0.4 + 0.2 * y, 0.5 - 0.2 * x * y])


def final_cast(consistency: str, scale: float = 4**6) -> float:
    """The last state's mean colour minus the mean colour of the input at its box."""
    image = smooth_image()
    result = chainzoom.zoom(
        image, scale=scale, backbone=Casting(), consistency=consistency, runtime=chainzoom.Runtime(device="cpu")
    )
    last = result[-1]
    region = resize(image, last.size, "bicubic", last.box)
    return float((last.image.mean((1, 2)) - region.mean((1, 2))).abs().max())


def test_without_consistency_the_cast_compounds():
    assert final_cast("none", 4**2) > 0.07 and final_cast("none") > 0.2


@pytest.mark.parametrize("method", ["wavelet", "adain", "backprojection", "anchor"])
def test_every_method_removes_the_cast(method):
    assert final_cast(method, 4**2) < 0.02


def test_anchoring_to_the_input_bounds_drift_over_six_steps():
    assert final_cast("anchor") < 0.01


def test_back_projection_lowers_the_downscale_error_at_every_iteration():
    crop = smooth_image()[:, :24, :32]
    output = (resize(crop, (128, 96), "bicubic") + CAST).clamp(0, 1)
    errors = [downscale_error(back_project(output, crop, n), crop) for n in range(4)]
    assert errors[0] > 0.04
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))


def test_consistency_is_recorded_and_refused_outside_the_chain(tmp_path):
    from chainzoom.cli import main

    out = tmp_path / "o"
    args = ["zoom", "assets/sample.jpg", "--scale", "16", "--backbone", "bicubic", "--quiet", "--device", "cpu"]
    assert main([*args, "--consistency", "backprojection", "--out", str(out)]) == 0
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["request"]["consistency"] == "backprojection"
    assert manifest["consistency"] == {
        "method": "backprojection",
        "iterations": 3,
        "downscale": "bicubic, antialiased (Pillow)",
        "upscale": "bicubic",
    }
    assert main([*args, "--consistency", "anchor", "--mode", "direct", "--out", str(tmp_path / "d")]) == 2
