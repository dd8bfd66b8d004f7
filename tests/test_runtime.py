"""Device, precision and thread flags: checked before any model loads."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from chainzoom import runtime as runtime_module
from chainzoom.backbones import BACKBONES
from chainzoom.cli import main
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime

from .conftest import SAMPLE


def test_auto_resolves_to_an_available_device():
    runtime = Runtime().resolve()
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert runtime.device == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ChainZoomError, match="no CUDA GPU"):
        Runtime(device="cuda").resolve()


def without_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))


def with_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))


def test_float16_is_refused_on_the_cpu():
    with pytest.raises(ChainZoomError, match="float16 is for GPUs"):
        Runtime(device="cpu", dtype="float16").resolve()


def test_bfloat16_is_refused_only_where_the_cpu_lacks_it_unless_allowed(monkeypatch, capsys):
    """Issue 23: bf16 is about 2x float32 on CPUs with native bf16 and several times slower elsewhere."""
    without_native_bf16(monkeypatch)
    with pytest.raises(ChainZoomError, match="no AVX512-BF16 or AMX.*--allow-slow-dtype"):
        Runtime(device="cpu", dtype="bfloat16").resolve()
    assert Runtime(device="cpu", dtype="bfloat16", allow_slow_dtype=True).resolve().dtype == "bfloat16"
    assert main(["zoom", str(SAMPLE), "--dtype", "bfloat16", "--device", "cpu", "--out", "/nonexistent/x"]) == 2
    assert "--dtype: bfloat16 on this CPU (no AVX512-BF16 or AMX)" in capsys.readouterr().err
    with_native_bf16(monkeypatch)
    assert Runtime(device="cpu", dtype="bfloat16").resolve().dtype == "bfloat16"


@pytest.mark.parametrize(
    ("native", "spec", "expected"),
    [
        (True, "realesrgan", "bfloat16"),
        (True, "realsr", "bfloat16"),
        (False, "realesrgan", "float32"),
        (True, "bicubic", "float32"),  # interpolation runs float32 whatever the CPU
        (True, "osediff-sd3:/models/sd3", "float32"),  # not measured in bf16 on a CPU
        (True, "spandrel:/models/x.pth", "float32"),  # safety per architecture not yet read
    ],
)
def test_auto_picks_the_precision_from_the_cpu_flags_and_the_facts(monkeypatch, native, spec, expected):
    (with_native_bf16 if native else without_native_bf16)(monkeypatch)
    cpu = Runtime(device="cpu")
    assert BACKBONES.dtype_for(spec, cpu) == expected
    assert BACKBONES.dtype_for(spec, Runtime(device="cpu", engine="ncnn")) == "float32"
    assert BACKBONES.dtype_for(spec, Runtime(device="cpu", dtype="float32")) == "float32"


def test_the_manifest_records_the_precision_auto_chose(monkeypatch, tmp_path):
    from chainzoom.config import ZoomConfig
    from chainzoom.job import resolve_job

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        (with_native_bf16 if native else without_native_bf16)(monkeypatch)
        config = ZoomConfig(runtime=Runtime(device="cpu"))
        job = resolve_job(config, config.runtime.resolve(), "0" * 64, "<in memory>")
        assert job.request()["runtime"]["dtype"] == expected
        baseline = resolve_job(ZoomConfig(mode="bicubic"), config.runtime.resolve(), "0" * 64, "<in memory>")
        assert baseline.request()["runtime"]["dtype"] == "float32"


@pytest.mark.slow
def test_bf16_output_of_the_real_model_is_within_its_stated_tolerance_of_float32(monkeypatch):
    """The bundled RRDBNet in bf16 against float32, in 8-bit levels: on average within 1, and 999 of
    1000 samples within 8 (measured on crops of the bundled photo: mean 0.49-0.80, 99.9th percentile
    2.6-6.1, largest 4.9-17 at hard edges; docs/performance.md)."""
    from chainzoom.io.images import load_image

    image = load_image(SAMPLE).rgb[:, 120:184, 150:214].contiguous()
    exact = BACKBONES.create("realesrgan", Runtime(device="cpu", dtype="float32")).upscale(image)
    fast = BACKBONES.create("realesrgan", Runtime(device="cpu", dtype="bfloat16", allow_slow_dtype=True))
    difference = ((fast.upscale(image) - exact).abs() * 255).flatten()
    assert 0 < difference.mean() <= 1.0
    assert difference.kthvalue(int(difference.numel() * 0.999)).values <= 8.0 and difference.max() <= 24.0


@pytest.mark.slow
def test_a_resumed_auto_run_keeps_the_precision_it_recorded(monkeypatch, tmp_path):
    """Made in bf16 on a CPU that has it, resumed where auto would pick float32: the run finishes
    in bf16, as one uninterrupted bf16 run would."""
    import chainzoom

    with_native_bf16(monkeypatch)
    photo = tmp_path / "photo.png"
    Image.open(SAMPLE).convert("RGB").crop((150, 120, 182, 152)).save(photo)
    cz = chainzoom.ChainZoom("realesrgan", runtime=Runtime(device="cpu", allow_slow_dtype=True))
    states = cz.iter_zoom(photo, 16, out=tmp_path / "run")
    next(states), next(states)  # state 0 and step 1, then stop: a partial run
    states.close()
    without_native_bf16(monkeypatch)
    resumed = chainzoom.ChainZoom("realesrgan", runtime=Runtime(device="cpu"))(photo, 16, out=tmp_path / "run")
    assert resumed.config.runtime.dtype == "bfloat16"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["request"]["runtime"]["dtype"] == "bfloat16" and manifest["complete"]
    whole = chainzoom.ChainZoom("realesrgan", runtime=Runtime(device="cpu", dtype="bfloat16", allow_slow_dtype=True))
    reference = whole(photo, 16)
    for state, expected in zip(resumed.states, reference.states):
        assert torch.equal(state.image, expected.image)


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
    assert main([*args, "--dtype", "float32", "--out", str(tmp_path / "torch")]) == 0  # ncnn runs float32
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
