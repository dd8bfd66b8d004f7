"""Device, precision and thread flags: checked before any model loads."""

from __future__ import annotations

import pytest
import torch

from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime


def test_auto_resolves_to_an_available_device():
    runtime = Runtime().resolve()
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert runtime.device == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ChainZoomError, match="no CUDA GPU"):
        Runtime(device="cuda").resolve()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_refused_on_the_cpu(dtype):
    with pytest.raises(ChainZoomError, match="float32"):
        Runtime(device="cpu", dtype=dtype).resolve()


def test_threads_are_applied_and_checked():
    before = torch.get_num_threads()
    try:
        assert Runtime(device="cpu", threads=1).resolve().threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ChainZoomError, match="^threads"):
        Runtime(threads=0)


def test_unknown_device_is_refused():
    with pytest.raises(ChainZoomError, match="^device"):
        Runtime(device="tpu")


@pytest.mark.slow
def test_ncnn_runtime_matches_torch_runtime_through_the_cli(tmp_path):
    from chainzoom.cli import main
    from chainzoom.io.images import load_image

    args = ["zoom", "assets/sample.jpg", "--scale", "4", "--view", "64", "--no-animation", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "torch")]) == 0
    assert main([*args, "--runtime", "ncnn", "--out", str(tmp_path / "ncnn")]) == 0
    a = load_image(tmp_path / "torch" / "step_01.png").rgb
    b = load_image(tmp_path / "ncnn" / "step_01.png").rgb
    assert (a - b).abs().max() <= 1 / 255 + 1e-6  # the same model, at most one 8-bit level apart


def test_ncnn_runtime_only_for_bundled_models(tmp_path, capsys):
    from chainzoom.cli import main

    out = str(tmp_path / "o")
    code = main(["zoom", "assets/sample.jpg", "--backbone", "bicubic", "--runtime", "ncnn", "--out", out])
    assert code == 2
    assert "--engine: ncnn does not apply to backbone 'bicubic' (engines: torch)" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_torch_backbone_gives_the_same_output():
    """``--runtime compile`` must change speed only, never pixels (checked on a tiny RRDBNet)."""
    from chainzoom.backbones.base import ModelCard
    from chainzoom.backbones.bundled.rrdbnet import RRDBNet
    from chainzoom.backbones.torch_model import TorchBackbone

    torch.manual_seed(0)
    model = RRDBNet(num_feat=8, num_block=1, num_grow=4)
    card = ModelCard("tiny", "test", "RRDBNet", 4)
    image = torch.rand(3, 12, 16)
    plain = TorchBackbone(model, card).upscale(image)
    compiled = TorchBackbone(model, card, compile=True).upscale(image)
    assert compiled.shape == (3, 48, 64)
    assert torch.allclose(plain, compiled, atol=1e-5)
