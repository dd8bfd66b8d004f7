"""The model-independent parts of the one-step diffusion backbones: placement, precision, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chainzoom.backbones.diffusion.common import OneStepOptions, explain_out_of_memory, resolve_precision
from chainzoom.backbones.diffusion.lora_merge import load_checkpoint, merge_low_rank
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime


def test_half_precision_is_refused_on_the_cpu_only():
    assert resolve_precision(Runtime(device="cpu")) == (torch.device("cpu"), torch.float32)
    for dtype in ("float16", "bfloat16"):
        with pytest.raises(ChainZoomError, match="on the CPU use auto or float32"):
            resolve_precision(Runtime(device="cpu", dtype=dtype))
    assert resolve_precision(Runtime(device="cuda", dtype="bfloat16")) == (torch.device("cuda"), torch.bfloat16)


def test_out_of_memory_hints_depend_on_what_is_already_set():
    cuda = torch.device("cuda")
    with (
        pytest.raises(ChainZoomError, match="--efficient-memory, --dtype float16, a smaller --view"),
        explain_out_of_memory(cuda, torch.float32, efficient_memory=False),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory")
    with (
        pytest.raises(ChainZoomError, match="try a smaller --view$"),
        explain_out_of_memory(cuda, torch.float16, efficient_memory=True),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory")
    # other errors pass through
    with (
        pytest.raises(RuntimeError, match="shape mismatch"),
        explain_out_of_memory(cuda, torch.float16, efficient_memory=True),
    ):
        raise RuntimeError("shape mismatch")


def test_options_are_checked():
    assert OneStepOptions.parse({}, default_color_fix="adain").color_fix == "adain"
    assert OneStepOptions.parse({"color_fix": None}, default_color_fix="none").color_fix == "none"
    with pytest.raises(ChainZoomError, match="color_fix must be one of"):
        OneStepOptions.parse({"color_fix": "hist"}, default_color_fix="none")
    with pytest.raises(ChainZoomError, match="latent must be one of"):
        OneStepOptions.parse({"latent": "mean"}, default_color_fix="none")


def test_conv_merge_equals_the_unmerged_low_rank_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    down, up = nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.Conv2d(2, 5, 1, bias=False)
    x = torch.randn(1, 3, 8, 8)
    expected = conv(x) + 2.0 * up(down(x))
    merge_low_rank(conv, up.weight.reshape(5, 2), down.weight.reshape(2, -1), 2.0, "test")
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ChainZoomError, match="do not fit a layer"):
        merge_low_rank(conv, torch.zeros(4, 2), torch.zeros(2, 27), 1.0, "test")


def test_checkpoints_load_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pkl")
    with pytest.raises(ChainZoomError, match="cannot read"):
        load_checkpoint(tmp_path / "evil.pkl", "test file")
    torch.save({"rank": 4, "names": ["a.b"], "w": torch.ones(2)}, tmp_path / "ok.pkl")
    assert load_checkpoint(tmp_path / "ok.pkl", "test file")["names"] == ["a.b"]
