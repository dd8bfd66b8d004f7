"""``--protocol official``: inference_coz.py's arithmetic, restated here from the official script.

The reference below is written from the official code's steps (8-bit PIL resampling,
``resize_and_center_crop`` with ``int()`` sizes, integer centre boxes, ``ToTensor`` /
``ToPILImage`` truncation, StableSR's colour fixes on those 8-bit pictures), never from
chainzoom's modules, and run with the same fake SR model on both sides.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from chainzoom.api import ChainZoom
from chainzoom.backbones import BACKBONES
from chainzoom.backbones.base import ModelCard, Restorer, component_of, restorer_of
from chainzoom.cli import main
from chainzoom.config import ZoomConfig
from chainzoom.pipeline.tiling import TiledBackbone
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.registry import BackboneEntry, BackboneFacts
from chainzoom.runtime import Runtime

from ..fakes import CountingBackbone


def model_in_signed_space(x: torch.Tensor) -> torch.Tensor:
    """The fake "weights": a smooth non-linear map on [-1, 1] images, so truncation matters."""
    return torch.tanh(1.3 * x + 0.1 * torch.sin(7.0 * x)) * 0.97 + 0.011


class FakeRestorer(Restorer):
    """A one-step restorer the way the diffusion backbones are: bicubic x4 inside, restore at size."""

    scale = 4
    text_aware = True

    def __init__(self, color_fix: str = "none") -> None:
        self._color_fix = color_fix

    @property
    def color_fix_method(self) -> str:
        return self._color_fix

    def restore(self, view: torch.Tensor, prompt: str = "") -> torch.Tensor:
        return (model_in_signed_space(view * 2.0 - 1.0).clamp(-1.0, 1.0) + 1.0) / 2.0

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:  # pragma: no cover - unused here
        raise AssertionError("the official protocol hands a restorer its own bicubic picture")

    def card(self) -> ModelCard:
        return ModelCard("fake-restorer", "test", "tanh", 4)


def create_fake_restorer(argument: str | None, runtime: Runtime, color_fix: str | None = None) -> FakeRestorer:
    return FakeRestorer(color_fix or "none")


#: The fake restorer as a registered backbone, so it is built the way the CLI builds any backbone.
FAKE_RESTORER = BackboneEntry(
    "fake-restorer",
    "tests.pipeline.test_official:create_fake_restorer",
    "test backbone: a one-step restorer with a smooth fake model",
    facts=BackboneFacts(text_aware=True, options=("color_fix",)),
)


@pytest.fixture
def fake_restorer_entry(monkeypatch) -> str:
    monkeypatch.setitem(BACKBONES._builtin, FAKE_RESTORER.name, FAKE_RESTORER)
    return FAKE_RESTORER.name


class Recorder(Prompter):
    """Keeps the two pictures each step's prompter is shown."""

    id = "recorder"

    def __init__(self) -> None:
        self.seen: list[PromptContext] = []

    def describe(self, context: PromptContext) -> str:
        self.seen.append(context)
        return f"step {context.step}"


# ----------------------------------------------------------------- the official steps, restated


def to_tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(picture)).permute(2, 0, 1).float().div(255)


def to_pil_image(tensor: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor.mul(255).byte().permute(1, 2, 0).numpy())


def resize_and_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = int(w * scale), int(h * scale)
    img = img.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def centre(picture: Image.Image, divisor: int) -> Image.Image:
    w, h = picture.size
    nw, nh = w // divisor, h // divisor
    return picture.crop(((w - nw) // 2, (h - nh) // 2, (w + nw) // 2, (h + nh) // 2))


def stablesr_wavelet(target: Image.Image, source: Image.Image) -> Image.Image:
    def blur(image: torch.Tensor, radius: int) -> torch.Tensor:
        k = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]])
        k = k[None, None].repeat(3, 1, 1, 1)
        return F.conv2d(F.pad(image, (radius,) * 4, mode="replicate"), k, groups=3, dilation=radius)

    def decompose(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = torch.zeros_like(image)
        for i in range(5):
            low = blur(image, 2**i)
            high += image - low
            image = low
        return high, low

    content_high, _ = decompose(to_tensor(target)[None])
    _, style_low = decompose(to_tensor(source)[None])
    return to_pil_image((content_high + style_low)[0].clamp_(0.0, 1.0))


def stablesr_adain(target: Image.Image, source: Image.Image) -> Image.Image:
    def stats(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = feat.view(3, -1)
        return flat.mean(dim=1).view(3, 1, 1), (flat.var(dim=1) + 1e-5).sqrt().view(3, 1, 1)

    content, style = to_tensor(target), to_tensor(source)
    (cm, cs), (sm, ss) = stats(content), stats(style)
    return to_pil_image((((content - cm) / cs) * ss + sm).clamp_(0.0, 1.0))


def official_run(
    path: Path, mode: str, rec_num: int, size: int, align: str = "nofix", restore=None
) -> list[Image.Image]:
    """inference_coz.py's loop for one image: the list 0.png ... {rec_num}.png.

    The SR model is the fake "weights", or ``restore``: a real model's output in [0, 1]
    for the ``ToTensor`` of the 8-bit bicubic ``sr_input`` (what OSEDiff computes from
    ``lq = sr_input * 2 - 1``, mapped back by ``* 0.5 + 0.5``).
    """
    states = [resize_and_center_crop(Image.open(path).convert("RGB"), size)]
    for rec in range(rec_num):
        if mode in ("nearest", "bicubic", "onestep"):
            w, h = states[0].size
            cropped = centre(states[0], 4 ** (rec + 1))
            if mode != "onestep":
                states.append(cropped.resize((w, h), Image.NEAREST if mode == "nearest" else Image.BICUBIC))
                continue
            sr_input = cropped.resize((w, h), Image.BICUBIC)
        else:
            w, h = states[-1].size
            sr_input = centre(states[-1], 4).resize((w, h), Image.BICUBIC)
        if restore is None:
            lq = to_tensor(sr_input)[None] * 2 - 1
            output = torch.clamp(model_in_signed_space(lq)[0], -1.0, 1.0)
            output_pil = to_pil_image(output * 0.5 + 0.5)
        else:
            output_pil = to_pil_image(restore(to_tensor(sr_input)))
        if align == "wavelet":
            output_pil = stablesr_wavelet(output_pil, sr_input)
        elif align == "adain":
            output_pil = stablesr_adain(output_pil, sr_input)
        states.append(output_pil)
    return states


# ----------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def wide_photo(tmp_path_factory) -> Path:
    """A non-square 8-bit photo-like input (smooth gradients plus texture), 150x97."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:97, 0:150]
    base = np.stack([x * 1.6, y * 2.4, (x + y) * 0.9], axis=-1)
    noise = rng.integers(-25, 26, size=base.shape)
    path = tmp_path_factory.mktemp("official") / "wide.png"
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def samples(state) -> np.ndarray:
    return np.round(state.image.permute(1, 2, 0).numpy() * 255).astype(np.int16)


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


@pytest.mark.parametrize("mode", ["chain", "onestep", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [64, 50])
def test_every_state_equals_the_official_arithmetic_on_a_non_square_input(wide_photo, mode, size) -> None:
    rec_num = 3 if size == 64 else 2  # 50 // 16 = 3 px, 50 // 64 would be no pixel at all
    pipeline = ChainZoom(FakeRestorer(), "null")
    result = pipeline(wide_photo, scale=4**rec_num, mode=mode, protocol="official", process_size=size)
    reference = official_run(wide_photo, mode, rec_num, size)
    assert len(result.states) == rec_num + 1
    for state, expected in zip(result.states, reference):
        assert state.size == (size, size)
        np.testing.assert_array_equal(samples(state), pixels(expected), err_msg=f"{mode} state {state.index}")


@pytest.mark.parametrize("align", ["wavelet", "adain"])
def test_the_official_colour_fixes_run_on_the_truncated_pictures(wide_photo, align) -> None:
    method = {"wavelet": "wavelet", "adain": "adain"}[align]
    result = ChainZoom(FakeRestorer(method), "null")(wide_photo, scale=16, protocol="official", process_size=64)
    reference = official_run(wide_photo, "chain", 2, 64, align)
    for state, expected in zip(result.states, reference):
        np.testing.assert_array_equal(samples(state), pixels(expected))


# ------------------------------------------------- a restorer behind a wrapper (issue 22, item 0)


def test_restorer_of_and_component_of_see_through_wrappers() -> None:
    restorer, plain = FakeRestorer(), CountingBackbone()
    tiled = TiledBackbone(restorer)
    assert restorer.wrapped is None and plain.wrapped is None
    assert tiled.wrapped is restorer and tiled.inner is restorer  # ``inner`` keeps working
    assert restorer_of(restorer) is restorer
    assert restorer_of(tiled) is restorer and restorer_of(TiledBackbone(tiled)) is restorer
    assert component_of(TiledBackbone(tiled)) is restorer and component_of(plain) is plain
    assert restorer_of(plain) is None and restorer_of(TiledBackbone(plain)) is None


@pytest.mark.parametrize(("mode", "align"), [("chain", "nofix"), ("onestep", "nofix"), ("chain", "wavelet")])
def test_a_restorer_inside_the_tiler_takes_the_official_8_bit_path(wide_photo, mode, align) -> None:
    """The tiler every front-end builds is no Restorer: its model's capability is read through it.

    Before the fix the tiler's ``upscale`` ran instead (FakeRestorer refuses it).
    """
    tiled = TiledBackbone(FakeRestorer("none" if align == "nofix" else align))
    result = ChainZoom(tiled, "null")(wide_photo, scale=16, mode=mode, protocol="official", process_size=64)
    reference = official_run(wide_photo, mode, 2, 64, align)
    assert len(result.states) == 3
    for state, expected in zip(result.states, reference):
        np.testing.assert_array_equal(samples(state), pixels(expected), err_msg=f"{mode} state {state.index}")


@pytest.mark.parametrize("mode", ["chain", "onestep"])
def test_the_cli_hands_a_registered_restorer_the_official_8_bit_picture(
    wide_photo, fake_restorer_entry, tmp_path, mode
) -> None:
    """``chainzoom zoom --protocol official`` builds the backbone through the registry and the tiler."""
    out = tmp_path / "run"
    argv = [str(wide_photo), "--backbone", fake_restorer_entry, "--prompter", "null", "--color-fix", "wavelet"]
    argv += ["--protocol", "official", "--process-size", "64", "--scale", "16", "--mode", mode]
    assert main(["zoom", *argv, "--out", str(out), "-q", "--no-animation"]) == 0
    reference = official_run(wide_photo, mode, 2, 64, "wavelet")
    for index, expected in enumerate(reference):
        written = Image.open(out / f"step_{index:02d}.png").convert("RGB")
        np.testing.assert_array_equal(pixels(written), pixels(expected), err_msg=f"{mode} state {index}")


@pytest.fixture(scope="module")
def official_sd3() -> ChainZoom:
    """A tiny random SD3 with official-format adapters, built as ``chainzoom zoom --protocol official``
    builds its pipeline: the spec as on the command line, ``ChainZoom.from_config``."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    import tempfile

    from ..tiny_diffusion import build_sd3, write_sd3_transformer_lora, write_sd3_vae_encoder

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base = build_sd3(root / "base")
        lora, vae = root / "model_20001.pkl", root / "vae_encoder_20001.pt"
        write_sd3_transformer_lora(base, lora)
        write_sd3_vae_encoder(base, vae)
        config = ZoomConfig(
            backbone=f"osediff-sd3:{base},lora={lora},vae={vae}",
            prompter="null",
            color_fix="wavelet",
            protocol="official",
            process_size=64,
            scale=16,
            runtime=Runtime(device="cpu"),
        )
        pipeline = ChainZoom.from_config(config)
        from chainzoom.runs.driver import load_models

        load_models(pipeline.models, config)  # what the CLI loads before a run: the job's models
        return pipeline, config


@pytest.mark.slow  # 7 to 15 s on 2 shared cores: building the tiny SD3 and its first forward pass
def test_osediff_sd3_built_as_the_cli_builds_it_equals_the_bare_restorer_byte_for_byte(
    wide_photo, official_sd3
) -> None:
    """The real one-step model behind the tiler, under the official chain and onestep (k=2).

    Each step must be ``restore`` on the official 8-bit bicubic picture, truncated, then the
    colour fix on the 8-bit pictures, truncated: the bytes the bare restorer gives, and the
    bytes the official loop computes with that model. Before the fix the tiler's ``upscale``
    ran on the integer crop instead (a float bicubic, the colour fix on float pictures).
    """
    from chainzoom.runs.driver import effective_models

    pipeline, config = official_sd3
    built = pipeline.models.backbone_for(effective_models(pipeline.models, config))  # the protocol's numerics: official
    restorer = restorer_of(built)
    assert restorer is not None and restorer is not built  # built inside the tiler
    assert restorer.settings()["numerics"] == "official"
    bare = ChainZoom(restorer, "null")
    for mode in ("chain", "onestep"):
        options = {"scale": 16, "mode": mode, "protocol": "official", "process_size": 64}
        wrapped, alone = pipeline(wide_photo, **options), bare(wide_photo, **options)
        assert wrapped.config.numerics == "official"
        reference = official_run(wide_photo, mode, 2, 64, "wavelet", restore=lambda view: restorer.restore(view, ""))
        assert len(wrapped.states) == len(alone.states) == 3
        for state, other, expected in zip(wrapped.states, alone.states, reference):
            np.testing.assert_array_equal(samples(state), samples(other), err_msg=f"{mode} state {state.index}")
            np.testing.assert_array_equal(samples(state), pixels(expected), err_msg=f"{mode} state {state.index}")


def test_rounding_instead_of_truncation_would_be_caught(wide_photo) -> None:
    """The fake model's outputs are not on the 8-bit grid, so truncation and rounding differ."""
    result = ChainZoom(FakeRestorer(), "null")(wide_photo, scale=4, protocol="official", process_size=64)
    sr_input = centre(official_run(wide_photo, "bicubic", 0, 64)[0], 4).resize((64, 64), Image.BICUBIC)
    rounded = torch.round((model_in_signed_space(to_tensor(sr_input) * 2 - 1).clamp(-1, 1) * 0.5 + 0.5) * 255)
    assert (rounded.permute(1, 2, 0).numpy().astype(np.int16) != samples(result.states[1])).mean() > 0.2


def test_the_prompter_sees_the_previous_state_and_the_8_bit_zoomed_input(wide_photo) -> None:
    """The multi-scale VLM's two images: ``{rec}.png`` and ``{rec+1}_input.png``."""
    recorder = Recorder()
    result = ChainZoom(FakeRestorer(), recorder)(wide_photo, scale=16, protocol="official", process_size=64)
    reference = official_run(wide_photo, "chain", 2, 64)
    assert [c.step for c in recorder.seen] == [1, 2]
    for rec, context in enumerate(recorder.seen):
        zoomed = centre(reference[rec], 4).resize((64, 64), Image.BICUBIC)
        np.testing.assert_array_equal(np.round(context.wide.permute(1, 2, 0).numpy() * 255), pixels(reference[rec]))
        np.testing.assert_array_equal(np.round(context.view.permute(1, 2, 0).numpy() * 255), pixels(zoomed))
    assert [s.prompt for s in result.states[1:]] == ["step 1", "step 2"]


def test_a_plain_x4_backbone_reads_the_integer_crop_and_is_truncated(wide_photo) -> None:
    """Not in the official code (it has only OSEDiff): the crop goes to the x4 model directly."""
    result = chainzoom_zoom(wide_photo, backbone="bicubic", scale=4)
    square = resize_and_center_crop(Image.open(wide_photo).convert("RGB"), 64)
    crop = to_tensor(centre(square, 4))
    from chainzoom.core.resample import resize

    expected = resize(crop, (64, 64), "bicubic").mul(255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(samples(result.states[1]), expected.astype(np.int16))


def chainzoom_zoom(path: Path, **options):
    import chainzoom

    return chainzoom.zoom(path, protocol="official", process_size=64, **options)


def test_the_boxes_are_the_official_crops_in_the_square(wide_photo) -> None:
    chain = chainzoom_zoom(wide_photo, backbone="bicubic", scale=64)
    assert [s.box.as_list() for s in chain.states] == [
        [0, 0, 64, 64],
        [24, 24, 40, 40],
        [30, 30, 34, 34],
        [31.5, 31.5, 32.5, 32.5],  # the chain nests: 24/16 px into the box [30, 34]
    ]
    baseline = chainzoom_zoom(wide_photo, mode="bicubic", scale=16)
    assert [s.box.as_list() for s in baseline.states][1:] == [[24, 24, 40, 40], [30, 30, 34, 34]]


def test_an_official_run_folder_records_the_protocol_and_resumes_byte_identically(wide_photo, tmp_path) -> None:
    out = tmp_path / "run"
    argv = [str(wide_photo), "--backbone", "bicubic", "--scale", "16", "--square", "--process-size", "64"]
    assert main(["zoom", *argv, "--out", str(out), "-q", "--no-animation"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["request"]["protocol"] == "official" and manifest["request"]["process_size"] == 64
    last = sorted(out.glob("step_*.png"))[-1]
    first_bytes = last.read_bytes()
    last.unlink()
    assert main(["zoom", *argv, "--out", str(out), "-q", "--no-animation"]) == 0
    assert last.read_bytes() == first_bytes


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--center", "0.3,0.3"], "--center: protocol official zooms the centre"),
        (["--scale", "100"], "--scale: protocol official zooms in 4x steps"),
        (["--mode", "direct"], "--mode: direct is chainzoom's baseline"),
        (["--view", "256"], "--view: protocol official makes process_size squares"),
        (["--consistency", "anchor"], "--consistency: does not apply to protocol official"),
        (["--mode", "bicubic", "--scale", "1024"], "--scale: x1024 crops less than a pixel"),
        (["--protocol", "paper"], "--protocol: must be one of chainzoom, official"),
    ],
)
def test_options_the_official_protocol_cannot_honour_are_one_line_and_exit_2(
    wide_photo, tmp_path, capsys, extra, problem
) -> None:
    out = tmp_path / "never"
    argv = ["zoom", str(wide_photo), "--protocol", "official", *extra, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and "\n" not in err
    assert not out.exists()


def test_process_size_without_the_official_protocol_is_refused(wide_photo, capsys) -> None:
    assert main(["zoom", str(wide_photo), "--backbone", "bicubic", "--process-size", "64"]) == 2
    assert "--process-size: applies only to protocol official" in capsys.readouterr().err


def test_the_official_protocol_picks_the_official_numerics_of_osediff_sd3() -> None:
    """The job (what runs and what the manifest records) holds the numerics the protocol implies."""
    from chainzoom.config import ZoomConfig
    from chainzoom.job import resolve_job
    from chainzoom.runtime import Runtime

    def numerics(**options: object) -> str | None:
        config = ZoomConfig(runtime=Runtime(device="cpu"), **options)  # type: ignore[arg-type]
        job = resolve_job(config, config.runtime, "0" * 64, "<in memory>")
        assert job.request()["numerics"] == job.config.numerics
        return job.config.numerics

    assert numerics(backbone="osediff-sd3:/models/sd3", protocol="official") == "official"
    assert numerics(backbone="osediff-sd3:/models/sd3") is None
    assert numerics(backbone="osediff-sd3:/models/sd3", protocol="official", numerics="chainzoom") == "chainzoom"
    assert numerics(backbone="bicubic", protocol="official") is None
    assert numerics(backbone="bicubic", protocol="official", numerics="chainzoom") is None
