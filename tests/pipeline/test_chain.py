"""The chain through the Python API: states, prompts, alpha, bit depth, other step factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainzoom
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.cli import main
from chainzoom.io.images import load_image, save_image
from chainzoom.prompts.base import PromptContext, Prompter


class Recorder(Prompter):
    """Remembers what it was shown, and numbers its prompts."""

    id = "recorder"

    def __init__(self) -> None:
        self.seen: list[PromptContext] = []

    def describe(self, context: PromptContext) -> str:
        self.seen.append(context)
        return f"prompt {context.step}"


class Nearest2x(Backbone):
    scale = 2

    def upscale(self, image, prompt=""):
        return image.repeat_interleave(2, -1).repeat_interleave(2, -2)

    def card(self):
        return ModelCard("nearest2x", "test", "none", 2)


def test_api_returns_every_state_with_prompts_from_the_last_two_states():
    prompter = Recorder()
    image = torch.rand(3, 64, 48)
    states = chainzoom.zoom(image, scale=64, center=(0.25, 0.75), backbone="bicubic", prompter=prompter)
    assert [s.index for s in states] == [0, 1, 2, 3]
    assert [s.magnification for s in states] == [1, 4, 16, 64]
    assert [s.prompt for s in states] == [None, "prompt 1", "prompt 2", "prompt 3"]
    for context, previous in zip(prompter.seen, states):
        # the wider context is the previous state; the view is shown at the same size
        assert torch.equal(context.wide, previous.image)
        assert context.view.shape == context.wide.shape
    assert all(s.image.shape == (3, 64, 48) for s in states)


def test_a_2x_backbone_zooms_in_2x_steps():
    states = chainzoom.zoom(torch.rand(3, 32, 32), scale=8, backbone=Nearest2x())
    assert [s.magnification for s in states] == [1, 2, 4, 8]


@pytest.mark.parametrize("mode", ["direct", "bicubic", "nearest"])
def test_baselines_through_the_api(mode):
    image = torch.rand(3, 64, 64)
    chain = chainzoom.zoom(image, scale=16, backbone="bicubic")
    other = chainzoom.zoom(image, scale=16, backbone="bicubic", mode=mode)
    assert [s.box for s in other] == [s.box for s in chain]
    assert torch.equal(other[0].image, chain[0].image)


def test_nearest_mode_shows_whole_input_pixels():
    """At x16, nearest must show blocks of 16x16 identical output pixels."""
    image = torch.rand(3, 64, 64)
    final = chainzoom.zoom(image, scale=16, mode="nearest")[-1].image
    block = final[:, 16:32, 16:32]
    assert torch.equal(block, block[:, :1, :1].expand_as(block))


def test_16_bit_rgba_input_keeps_alpha_and_depth_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.random((3, 40, 40), dtype=np.float32))
    alpha = torch.zeros(1, 40, 40)
    alpha[:, :, 20:] = 1.0  # left half transparent, right half opaque
    source = tmp_path / "in.png"
    save_image(source, rgb, alpha, bit_depth=16)
    out = tmp_path / "out"
    assert (
        main(
            [
                "zoom",
                str(source),
                "--scale",
                "4",
                "--backbone",
                "bicubic",
                "--center",
                "0.5,0.5",
                "--no-animation",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    state = load_image(out / "step_01.png")
    assert state.bit_depth == 16 and state.alpha is not None
    # step 1 shows the centre 10x10 input px: the alpha edge at x=20 lands in the middle
    assert state.alpha[0, :, :15].max() < 0.05 and state.alpha[0, :, -15:].min() > 0.95
