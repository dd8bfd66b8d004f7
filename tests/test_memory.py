"""The memory plan (``--memory``): which models stay on the device, simulated and followed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chainzoom.errors import OptionError
from chainzoom.memory import PLANS, Placement, choose_plan, initial_plan, peak_bytes
from chainzoom.runtime import Runtime

GB = 10**9
GIB = 1 << 30
# SD3 medium as the official code runs it (text encoders fp16: CLIP-L 123M + CLIP-G 695M + T5-XXL 4.76B
# params; transformer 2.03B + VAE 84M params in fp32), Qwen2.5-VL-3B in bf16 (3.75B params)
WEIGHTS = {"text": int(5.578e9 * 2), "sr": int(2.114e9 * 4), "vlm": int(3.75e9 * 2)}
WORK = {"sr": 128 * 128 * 80 * 1024, "vlm": GIB}


def test_the_peaks_follow_each_plan_by_hand():
    text, sr, vlm = WEIGHTS["text"], WEIGHTS["sr"], WEIGHTS["vlm"]
    assert peak_bytes(PLANS["resident"], WEIGHTS, WORK) == text + sr + vlm + WORK["sr"]
    # text-offload: the VLM makes room for the text encoders; the SR model stays
    assert peak_bytes(PLANS["text-offload"], WEIGHTS, WORK) == max(sr + vlm + WORK["vlm"], sr + text, sr + WORK["sr"])
    assert peak_bytes(PLANS["sequential"], WEIGHTS, WORK) == max(text, sr + WORK["sr"], vlm + WORK["vlm"])


@pytest.mark.parametrize(
    ("free", "plan"),
    [(80 * GIB, "resident"), (24 * GIB, "text-offload"), (16 * GIB, "sequential"), (GIB, "sequential")],
)
def test_auto_takes_the_most_resident_plan_that_fits(free, plan):
    """The paper's stack on one 24 GB GPU: the SR model stays, text encoders and VLM take turns."""
    assert choose_plan(WEIGHTS, WORK, free).name == plan


def test_without_a_vlm_only_the_backbone_groups_count():
    weights = {k: v for k, v in WEIGHTS.items() if k != "vlm"}
    assert choose_plan(weights, WORK, 24 * GIB).name == "resident"


class Recording(Placement):
    def __init__(self, plan: str) -> None:
        super().__init__(torch.device("cpu"), PLANS[plan])
        self.moves: list[str] = []

    def _move(self, name: str, resident: bool) -> None:
        self.moves.append(("+" if resident else "-") + name)
        super()._move(name, resident)


def run_steps(placement: Placement, steps: int = 2) -> list[set[str]]:
    seen = []
    for _ in range(steps):
        for group in ("vlm", "text", "sr"):
            with placement.use(group):
                seen.append(set(placement.resident))
    return seen


@pytest.mark.parametrize(
    ("plan", "during", "moves"),
    [
        ("resident", [{"vlm", "text", "sr"}] * 3, []),
        ("text-offload", [{"vlm", "sr"}, {"text", "sr"}, {"sr"}], ["+vlm", "-vlm", "+text", "-text"]),
        ("sequential", [{"vlm"}, {"text"}, {"sr"}], ["+vlm", "-vlm", "+text", "-text", "+sr", "-sr"]),
    ],
)
def test_a_placement_moves_only_what_its_plan_says(plan, during, moves):
    """In the steady state (a chain's second step): which groups sit together, and every move."""
    placement = Recording(plan)
    for group in ("text", "sr", "vlm"):
        placement.add(group, [nn.Linear(2, 2)])
    placement.onload()
    assert placement.resident == {"text", "sr", "vlm"} - PLANS[plan].leaves
    run_steps(placement, 1)
    placement.moves.clear()
    assert run_steps(placement, 1) == during
    assert placement.moves == moves


def test_efficient_memory_is_the_sequential_plan_and_contradictions_are_refused():
    assert initial_plan(Runtime(), efficient_memory=True).name == "sequential"
    assert initial_plan(Runtime(memory="text-offload")).name == "text-offload"
    assert initial_plan(Runtime()).name == "resident"
    with pytest.raises(OptionError, match="contradicts efficient_memory"):
        initial_plan(Runtime(memory="resident"), efficient_memory=True)
    with pytest.raises(OptionError, match="memory: must be one of auto, resident, text-offload, sequential"):
        Runtime(memory="lazy")


def test_the_vlm_joins_the_backbones_placement_and_the_plan_is_recorded(tmp_path):
    """A real pipeline (tiny SD3 + tiny Qwen2.5-VL on the CPU): one placement for both models."""
    pytest.importorskip("diffusers")
    import json

    from chainzoom.api import ChainZoom

    from .tiny_diffusion import build_sd3
    from .tiny_vlm import build_tiny_qwen25vl

    base = build_sd3(tmp_path / "sd3")
    vlm = build_tiny_qwen25vl(tmp_path / "qwen")
    pipeline = ChainZoom(
        f"osediff-sd3:{base}", f"vlm:{vlm}", runtime=Runtime(device="cpu", memory="text-offload"), prompter_max_tokens=3
    )
    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    pipeline(photo, scale=4, out=tmp_path / "run")
    placement = pipeline.backbone.inner.residency
    assert set(placement.groups) == {"text", "sr", "vlm"} and placement.plan.name == "text-offload"
    assert pipeline.prompter.placement is placement
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["backbone"]["settings"]["memory"] == "text-offload"
    assert "memory" not in manifest["request"]["runtime"]  # it changes no pixel
