"""The Python API: one pipeline loads its models once; results, streaming, callbacks, run folders."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import chainzoom
from chainzoom.backbones import BACKBONES
from chainzoom.cli import main
from chainzoom.core.geometry import Box
from chainzoom.core.resample import resize
from chainzoom.errors import ChainZoomError, OptionError
from chainzoom.io.images import quantize

from . import fakes
from .conftest import SAMPLE


@pytest.fixture
def counting(monkeypatch):
    """The counting fake registered as ``--backbone counting`` for the test."""
    monkeypatch.setitem(BACKBONES._builtin, "counting", fakes.COUNTING)
    fakes.BUILT.clear()
    return fakes.BUILT


def test_the_pipeline_loads_its_backbone_once(counting):
    cz = chainzoom.ChainZoom(backbone="counting", runtime=chainzoom.Runtime(device="cpu"))
    assert counting == []  # nothing loads before it is needed
    image = torch.rand(3, 32, 32)
    results = [cz(image, scale=16), cz(image, scale=4, center=(0.2, 0.8)), cz(image, scale=64, mode="direct")]
    assert counting == ["cpu"]
    assert [len(r) for r in results] == [3, 2, 4]
    assert cz.backbone.inner.calls == 2 + 1 + 3


def test_result_holds_states_plan_cards_and_timings():
    cz = chainzoom.ChainZoom("bicubic", 'fixed:"a cat"', runtime=chainzoom.Runtime(device="cpu"))
    result = cz(SAMPLE, scale=16, center=(0.45, 0.42), view=64)
    assert isinstance(result, chainzoom.ZoomResult)
    assert [s.magnification for s in result][1:] == [4, 16] and result[-1] is result.states[-1]
    assert [s.box for s in result.states[1:]] == [step.box for step in result.plan.steps]
    assert result.backbone["id"] == "bicubic" and result.prompter == {"id": "fixed", "text": "a cat"}
    assert [s.prompt for s in result] == [None, "a cat", "a cat"]
    assert result.timings["total"] >= result.timings["backbone"] >= 0 and result.out is None
    assert result.config.scale == 16 and result.config.view == (64, 40)  # what ran: the view as planned


def test_iter_zoom_streams_and_on_state_sees_every_state():
    cz = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu"))
    stream = cz.iter_zoom(torch.rand(3, 32, 32), scale=64)
    first = next(stream)
    assert first.index == 0 and first.magnification == 1  # made before the first step runs
    assert [s.index for s in stream] == [1, 2, 3]
    seen = []
    cz(torch.rand(3, 32, 32), scale=16, on_state=seen.append)
    assert [s.index for s in seen] == [0, 1, 2]


def test_out_writes_the_same_run_folder_as_the_cli(tmp_path):
    args = ["--scale", "16", "--view", "64", "--backbone", "bicubic", "--device", "cpu"]
    assert main(["zoom", str(SAMPLE), *args, "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    cz = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu"))
    result = cz(SAMPLE, scale=16, view=64, out=tmp_path / "api")
    assert result.out == tmp_path / "api"
    for index in range(3):
        name = f"step_{index:02d}.png"
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    api = json.loads((tmp_path / "api" / "manifest.json").read_text())
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert api["request"] == cli["request"] and api["complete"]
    # The same call again finds the finished run and makes nothing.
    stamp = (tmp_path / "api" / "step_02.png").stat().st_mtime_ns
    again = cz(SAMPLE, scale=16, view=64, out=tmp_path / "api")
    assert (tmp_path / "api" / "step_02.png").stat().st_mtime_ns == stamp
    assert all(torch.equal(a.image, b.image) for a, b in zip(again, result))


def test_bad_keywords_are_refused_by_name():
    cz = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu"))
    with pytest.raises(OptionError, match="^scale: must be a number greater than 1"):
        cz(SAMPLE, scale=1)
    with pytest.raises(OptionError, match="^center: 2,0.5 is outside the image"):
        cz(SAMPLE, center=(2, 0.5))
    with pytest.raises(OptionError, match="^mode: must be one of"):
        cz(SAMPLE, mode="zoom")
    with pytest.raises(OptionError, match=r"^color_fix: does not apply to backbone 'bicubic' \(it takes none\)"):
        chainzoom.ChainZoom("bicubic", color_fix="wavelet")
    with pytest.raises(OptionError, match=r"^engine: ncnn does not apply to backbone 'bicubic'"):
        chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(engine="ncnn"))
    with pytest.raises(TypeError):
        chainzoom.ChainZoom("bicubic", colour_fix="wavelet")  # a typo is no option
    with pytest.raises(ChainZoomError, match="unknown backbone 'realesrgn'"):
        chainzoom.ChainZoom("realesrgn")


def test_zoom_shortcut_takes_model_and_zoom_options():
    result = chainzoom.zoom(torch.rand(3, 32, 32), scale=16, backbone="bicubic", mode="direct", view=16)
    assert [s.image.shape for s in result] == [(3, 16, 16)] * 3
    baseline = chainzoom.zoom(torch.rand(3, 32, 32), scale=16, mode="nearest")
    assert baseline.backbone is None and baseline.prompter is None


def test_direct_mode_runs_the_backbone_once_on_the_input_region(counting):
    """``direct``: state 1 is the backbone's own output on the chain's first crop (a nearest
    backbone has no border effects, so exactly); later states interpolate that output."""
    cz = chainzoom.ChainZoom("counting", runtime=chainzoom.Runtime(device="cpu"))
    image = torch.rand(3, 64, 48)
    chain = cz(image, scale=64, center=(0.3, 0.6), consistency="none")  # the plain chain: step 1 is direct's
    direct = cz(image, scale=64, center=(0.3, 0.6), mode="direct")
    assert torch.equal(direct[1].image, chain[1].image)
    assert [s.box for s in direct] == [s.box for s in chain]
    for state in direct.states[2:]:
        # the backbone's 4x output of the whole-pixel input region around the box (2 px of
        # context), interpolated (bicubic) to the view at the box
        box = state.box
        x0, y0 = max(math.floor(box.x0) - 2, 0), max(math.floor(box.y0) - 2, 0)
        x1, y1 = min(math.ceil(box.x1) + 2, 48), min(math.ceil(box.y1) + 2, 64)
        upscaled = image[:, y0:y1, x0:x1].repeat_interleave(4, -1).repeat_interleave(4, -2)
        inner = Box(*(4 * v for v in (box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)))
        expected = quantize(resize(upscaled, (48, 64), "bicubic", inner), 8)
        assert torch.equal(state.image, expected)
        assert not torch.equal(state.image, chain[state.index].image)


def test_protocol_official_is_the_official_centred_512_square(tmp_path):
    photo = tmp_path / "wide.png"
    y, x = torch.meshgrid(torch.arange(480.0), torch.arange(640.0), indexing="ij")
    smooth = torch.stack([x / 640, y / 480, 0.5 + 0.4 * torch.sin(x / 23) * torch.cos(y / 31)], -1)
    Image.fromarray((smooth * 255).round().to(torch.uint8).numpy()).save(photo)
    result = chainzoom.zoom(photo, scale=4, backbone="bicubic", protocol="official")
    assert result[0].image.shape == (3, 512, 512) and result.plan.input_size == (512, 512)
    # resize_and_center_crop: short side to 512 with int() sizes (682x512), Lanczos in 8 bits, crop at 85
    official = Image.open(photo).resize((682, 512), Image.Resampling.LANCZOS).crop((85, 0, 597, 512))
    ours = (result[0].image.permute(1, 2, 0) * 255).round()
    assert torch.equal(ours, torch.from_numpy(__import__("numpy").asarray(official)).float())


def test_a_diffusion_backbone_without_a_prompter_gets_the_empty_prompt(monkeypatch, counting):
    """The default prompter is ``null``: a text-aware backbone is given "" (never None)."""
    prompts: list[object] = []
    original = fakes.CountingBackbone.upscale

    def recording(self, image, prompt=""):
        prompts.append(prompt)
        return original(self, image, prompt)

    monkeypatch.setattr(fakes.CountingBackbone, "upscale", recording)
    chainzoom.zoom(torch.rand(3, 32, 32), scale=16, backbone="counting", runtime=chainzoom.Runtime(device="cpu"))
    assert prompts == ["", ""]


def test_import_chainzoom_and_the_models_listing_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, chainzoom; from chainzoom.cli import main; main(['models']); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "osediff-sd3:BASE" in done.stdout and "engines: torch, compile, ncnn" in done.stdout


def test_onestep_interpolates_first_and_runs_the_backbone_once(counting):
    """The official one-step baseline: the box's input region bicubic to a quarter of the view,
    then one 4x backbone call; at x4 it is the chain's first step."""
    cz = chainzoom.ChainZoom("counting", runtime=chainzoom.Runtime(device="cpu"))
    image = torch.rand(3, 64, 48)
    chain = cz(image, scale=64, center=(0.3, 0.6), consistency="none")  # the plain chain: step 1 is onestep's
    calls = cz.backbone.inner.calls
    onestep = cz(image, scale=64, center=(0.3, 0.6), mode="onestep")
    assert cz.backbone.inner.calls - calls == 3  # one backbone call per state
    assert [s.box for s in onestep] == [s.box for s in chain]
    assert torch.equal(onestep[1].image, chain[1].image)
    for state in onestep.states[2:]:
        small = resize(image, (12, 16), "bicubic", state.box)
        expected = quantize(small.repeat_interleave(4, -1).repeat_interleave(4, -2), 8)
        assert torch.equal(state.image, expected)


# ---------------------------------------------------------------- the run engine (issue 22)


def test_a_single_zoom_refuses_an_executor_it_cannot_honour(tmp_path):
    """Item 3: ``cz(img, executor="ray")`` ran locally; now it is refused in the words the config uses."""
    cz = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu"))
    image = torch.rand(3, 32, 32)
    for options in ({"executor": "ray"}, {"workers": 2}, {"ray_address": "auto"}):
        with pytest.raises(OptionError, match="one zoom runs in this process"):
            cz(image, 4, out=tmp_path / "run", **options)
        with pytest.raises(OptionError, match="one zoom runs in this process"):
            next(cz.iter_zoom(image, 4, **options))
    assert not (tmp_path / "run").exists()
    assert len(cz(image, 4, executor="local")) == 2  # the neutral value changes nothing


def test_a_full_run_does_not_depend_on_earlier_calls(tmp_path):
    """Item 2: after any ``cz(...)`` the null prompter was built, and ``zoom_full`` then prompted
    every tile (``level_01_prompts.json``, ``prompter: {"id": "null"}``)."""
    pytest.importorskip("pyvips")
    photo = tmp_path / "photo.png"
    Image.open(SAMPLE).convert("RGB").crop((100, 100, 164, 164)).save(photo)
    fresh = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu")).zoom_full(
        photo, tmp_path / "fresh", 4.0, format="png"
    )
    used = chainzoom.ChainZoom("bicubic", runtime=chainzoom.Runtime(device="cpu"))
    used(photo, 16)
    after = used.zoom_full(photo, tmp_path / "used", 4.0, format="png")
    assert after["prompter"] is None and fresh["prompter"] is None
    assert not list((tmp_path / "used").glob("*prompts.json"))
    assert (tmp_path / "used" / "level_01.png").read_bytes() == (tmp_path / "fresh" / "level_01.png").read_bytes()


def test_the_official_protocol_records_and_runs_the_official_numerics_from_the_api():
    """Item 4: the CLI picked the official numerics under protocol official, ``ChainZoom`` did not,
    and both recorded ``numerics: null``. The job decides it for both, and records it."""
    from chainzoom.runs import driver

    cz = chainzoom.ChainZoom("osediff-sd3:/models/sd3", runtime=chainzoom.Runtime(device="cpu"))
    image = torch.rand(3, 64, 64)
    config = cz.job(image, scale=16, protocol="official", process_size=64)
    zoom = driver.prepare(cz.models, image, config)  # plans from the facts; nothing loads
    assert zoom.job.config.numerics == "official" and zoom.job.request()["numerics"] == "official"
    chosen = driver.prepare(cz.models, image, cz.job(image, scale=16, protocol="chainzoom"))
    assert chosen.job.request()["numerics"] is None


def test_resolving_a_runtime_leaves_the_random_state_alone():
    """Item 6: ``Runtime.resolve()`` re-seeded the global torch RNG as a side effect."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    chainzoom.Runtime(device="cpu", seed=7).resolve()
    assert torch.equal(torch.rand(4), expected)


def test_options_of_a_component_passed_as_an_object_are_refused():
    """Item 6: an object's options were judged by the default backbone's facts (realesrgan's)."""
    backbone = fakes.CountingBackbone()
    for options in ({"numerics": "official"}, {"color_fix": "wavelet"}, {"efficient_memory": True}):
        with pytest.raises(OptionError, match="passed as an object"):
            chainzoom.ChainZoom(backbone, **options)
    from chainzoom.prompts import PROMPTERS

    fixed = PROMPTERS.create("fixed:a cat")
    for options in ({"prompt": "more"}, {"prompter_max_tokens": 8}):
        with pytest.raises(OptionError, match="passed as an object"):
            chainzoom.ChainZoom("bicubic", fixed, **options)


def test_a_run_of_an_object_records_it_and_cannot_be_rerun(tmp_path):
    """A request names a component passed as an object (``object:<id>``); ``--rerun`` says why it cannot."""
    photo = tmp_path / "photo.png"
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 48, 48)).save(photo)
    cz = chainzoom.ChainZoom(fakes.CountingBackbone(), runtime=chainzoom.Runtime(device="cpu"))
    cz(photo, 4, out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["request"]["backbone"] == "object:counting"
    assert main(["zoom", "--rerun", str(tmp_path / "run" / "manifest.json"), "--out", str(tmp_path / "again")]) == 2
    assert not (tmp_path / "again").exists()
