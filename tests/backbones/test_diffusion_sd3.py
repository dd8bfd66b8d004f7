"""OSEDiff on SD3 (Chain-of-Zoom's backbone) on a tiny random SD3 with official-format adapters."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from chainzoom.api import zoom
from chainzoom.backbones.diffusion import sd3 as osediff_sd3
from chainzoom.core.colorfix import color_fix
from chainzoom.core.resample import resize
from chainzoom.errors import ChainZoomError
from chainzoom.io.digest import file_sha256
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.runtime import Runtime

from ..tiny_diffusion import (
    build_sd3,
    build_sd21,
    write_osediff_checkpoint,
    write_sd3_transformer_lora,
    write_sd3_vae_encoder,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    base = build_sd3(root / "base")
    lora, vae = root / "model_20001.pkl", root / "vae_encoder_20001.pt"
    pairs = write_sd3_transformer_lora(base, lora)
    reference_vae = write_sd3_vae_encoder(base, vae)
    return {"root": root, "base": base, "lora": lora, "vae": vae, "pairs": pairs, "reference_vae": reference_vae}


@pytest.fixture(scope="module")
def backbone(files):
    return make(files)


def make(files, runtime: Runtime | None = None, adapters: str = "lora,vae", **options):
    spec = str(files["base"]) + "".join(f",{role}={files[role]}" for role in adapters.split(",") if role)
    return osediff_sd3.create(spec, runtime or Runtime(device="cpu"), **options)


def image(height: int = 16, width: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def test_one_step_is_4x_in_range_float32(backbone):
    out = backbone.upscale(image(), "a red cat")
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.01
    assert backbone.text_aware and backbone.scale == 4


def test_sizes_off_the_latent_grid_are_padded_and_cropped(backbone):
    assert backbone.upscale(image(15, 13), "a cat").shape == (3, 60, 52)


def test_same_seed_same_output_other_seed_differs(files, backbone):
    first = backbone.upscale(image(), "a red cat")
    assert torch.equal(first, backbone.upscale(image(), "a red cat"))
    other_seed = make(files, Runtime(device="cpu", seed=1))
    assert not torch.equal(first, other_seed.upscale(image(), "a red cat"))
    mode = [make(files, Runtime(device="cpu", seed=s), latent="mode").upscale(image(), "a red cat") for s in (0, 1)]
    assert torch.equal(mode[0], mode[1])


def test_the_prompt_changes_the_output(backbone):
    cat, dog = (backbone.upscale(image(), prompt) for prompt in ("a red cat", "blue dog on a sofa"))
    assert (cat - dog).abs().max() > 1e-3


def test_official_text_encoding_layout(backbone):
    sequence, pooled = backbone._encode_prompt("a red cat")
    assert sequence.shape == (1, osediff_sd3.CLIP_TOKENS + osediff_sd3.T5_TOKENS, 32)
    assert pooled.shape == (1, 32)
    clip_width = 8 + 16  # the two CLIPs' hidden sizes, zero-padded to T5's 32
    assert torch.all(sequence[:, : osediff_sd3.CLIP_TOKENS, clip_width:] == 0)
    assert sequence[:, : osediff_sd3.CLIP_TOKENS, :clip_width].abs().sum() > 0


def test_one_scheduler_step_is_t1000_sigma1(files):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(files["base"], subfolder="scheduler")
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [osediff_sd3.TIMESTEP]
    assert scheduler.sigmas.tolist() == [1.0, 0.0]


def test_efficient_memory_agrees_and_never_holds_both_groups(files, backbone):
    efficient = make(files, efficient_memory=True)
    seen = {}
    for name in ("_encode_prompt", "_denoise"):
        method = getattr(efficient, name)

        def record(*args, _name=name, _method=method):
            seen[_name] = set(efficient.residency.resident)
            return _method(*args)

        setattr(efficient, name, record)
    out = efficient.upscale(image(), "a red cat")
    assert torch.equal(out, backbone.upscale(image(), "a red cat"))
    assert seen == {"_encode_prompt": {"text"}, "_denoise": {"sr"}}
    assert efficient.residency.resident == set()
    assert backbone.residency.resident == {"text", "sr"}


def test_offload_and_onload(files):
    model = make(files)
    model.offload()
    assert model.residency.resident == set()
    model.onload()
    assert model.residency.resident == {"text", "sr"}


def test_transformer_lora_is_merged_into_adaln_zero_linears(files, backbone):
    bare = make(files, adapters="")
    merged = dict(backbone.parts.transformer.named_modules())
    original = dict(bare.parts.transformer.named_modules())
    assert len(files["pairs"]) == 3  # norm1 of both blocks, norm1_context of the first only
    for name, up, down in files["pairs"]:
        expected = original[name].weight + up @ down
        torch.testing.assert_close(merged[name].weight, expected)


def test_vae_encoder_matches_the_peft_wrapped_reference(files, backbone):
    pixels = image(64, 64).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        ours = backbone.parts.vae.encoder(pixels)
        reference = files["reference_vae"].encoder(pixels)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_adapters_change_the_output(files, backbone):
    out = backbone.upscale(image(), "a red cat")
    for adapters in ("", "lora", "vae"):
        assert (make(files, adapters=adapters).upscale(image(), "a red cat") - out).abs().max() > 1e-3


def test_colour_fix_is_applied_against_the_bicubic_view(files, backbone):
    adain = make(files, color_fix="adain").upscale(image(), "a red cat")
    raw = backbone.upscale(image(), "a red cat")
    expected = color_fix(raw, resize(image(), (64, 64), "bicubic"), "adain")
    torch.testing.assert_close(adain, expected)


def test_vae_tiling_acts_only_above_the_vae_sample_size(files, backbone):
    untiled = make(files, vae_tiling=False)
    small, large = image(16, 16), image(32, 32)  # outputs 64 (= sample_size) and 128
    assert torch.equal(untiled.upscale(small, "a"), backbone.upscale(small, "a"))
    tiled_large = backbone.upscale(large, "a")
    assert tiled_large.shape == (3, 128, 128)
    assert not torch.equal(untiled.upscale(large, "a"), tiled_large)


def test_card_and_settings_name_base_and_adapter_hashes(files, backbone):
    card = backbone.card()
    assert card.id == "osediff-sd3" and card.text_aware and card.scale == 4 and card.parameters > 0
    assert card.weights_sha256 == file_sha256(files["lora"], files["vae"])
    assert str(files["base"]) in card.source
    settings = backbone.settings()
    assert settings["adapters"]["lora"]["sha256"] == file_sha256(files["lora"])
    assert settings["adapters"]["vae"]["sha256"] == file_sha256(files["vae"])
    assert settings["base"] == str(files["base"]) and settings["timestep"] == 1000.0
    assert "not the trained SR model" in make(files, adapters="lora").card().description


def test_a_zoom_chain_passes_each_prompt_to_the_backbone(backbone):
    class StepPrompter(Prompter):
        def describe(self, context: PromptContext) -> str:
            return f"step {context.step}, a red cat"

    states = zoom(image(64, 64), scale=64, backbone=backbone, prompter=StepPrompter())
    assert [s.prompt for s in states] == [None, "step 1, a red cat", "step 2, a red cat", "step 3, a red cat"]
    assert states[-1].image.shape == (3, 64, 64) and states[-1].magnification == 64


def test_checkpoint_for_sd21_is_refused_with_the_right_backbone(files):
    base21 = build_sd21(files["root"] / "sd21")
    osediff = files["root"] / "osediff.pkl"
    write_osediff_checkpoint(base21, osediff)
    for role in ("lora", "vae"):
        with pytest.raises(ChainZoomError, match="osediff-sd21"):
            osediff_sd3.create(f"{files['base']},{role}={osediff}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="StableDiffusionPipeline.*needs a StableDiffusion3Pipeline"):
        osediff_sd3.create(f"{base21},lora={files['lora']}", Runtime(device="cpu"))


def test_swapped_adapter_files_are_explained(files):
    with pytest.raises(ChainZoomError, match="pass it as lora="):
        osediff_sd3.create(f"{files['base']},vae={files['lora']}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="goes to vae="):
        osediff_sd3.create(f"{files['base']},lora={files['vae']}", Runtime(device="cpu"))


def test_lora_for_another_base_is_refused(files, tmp_path):
    tensors = torch.load(files["lora"], weights_only=True)
    torch.save(tensors[:-2], tmp_path / "short.pkl")
    with pytest.raises(ChainZoomError, match="2 LoRA pairs.*3 AdaLayerNormZero"):
        osediff_sd3.create(f"{files['base']},lora={tmp_path / 'short.pkl'}", Runtime(device="cpu"))
    torch.save([tensors[0], tensors[1][:, :5]] + tensors[2:], tmp_path / "narrow.pkl")
    with pytest.raises(ChainZoomError, match="pair 0: LoRA shapes .* do not fit a layer"):
        osediff_sd3.create(f"{files['base']},lora={tmp_path / 'narrow.pkl'}", Runtime(device="cpu"))
    encoder = torch.load(files["vae"], weights_only=True)
    encoder.pop(next(iter(encoder)))
    torch.save(encoder, tmp_path / "partial.pt")
    with pytest.raises(ChainZoomError, match="missing parameters: conv_in.weight"):
        osediff_sd3.create(f"{files['base']},vae={tmp_path / 'partial.pt'}", Runtime(device="cpu"))


def test_missing_component_and_bad_requests_are_clear(files, tmp_path):
    broken = shutil.copytree(files["base"], tmp_path / "no_t5")
    shutil.rmtree(broken / "text_encoder_3")
    with pytest.raises(ChainZoomError, match="'text_encoder_3' component"):
        osediff_sd3.create(str(broken), Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="does not exist"):
        osediff_sd3.create(str(tmp_path / "absent"), Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="no model_index.json"):
        osediff_sd3.create(str(broken / "transformer"), Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="cannot load the 'transformer' component of stabilityai/"):
        osediff_sd3.create("stabilityai/stable-diffusion-3-medium-diffusers", Runtime(device="cpu"))  # offline in tests
    with pytest.raises(ChainZoomError, match="on the CPU use auto or float32"):
        osediff_sd3.create(str(files["base"]), Runtime(device="cpu", dtype="bfloat16"))
    with pytest.raises(ChainZoomError, match="needs a base model"):
        osediff_sd3.create(None, Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="unknown spec option"):
        osediff_sd3.create(f"{files['base']},ckpt=x", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="unknown option"):
        osediff_sd3.create(str(files["base"]), Runtime(device="cpu"), tiles=4)
    with pytest.raises(ChainZoomError, match="not found"):
        osediff_sd3.create(f"{files['base']},lora={tmp_path / 'absent.pkl'}", Runtime(device="cpu"))


def test_views_beyond_the_position_embedding_are_refused(backbone):
    with pytest.raises(ChainZoomError, match="largest size"):
        backbone.upscale(image(160, 160), "a cat")  # 640 px > 32 patches * 2 * 8


def test_out_of_memory_names_the_flags_that_help(files, monkeypatch):
    model = make(files)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "_denoise", exhausted)
    with pytest.raises(ChainZoomError, match="out of memory on cpu.*smaller --view"):
        model.upscale(image(), "a cat")


# ------------------------------------------------------------------ numerics="official"


@pytest.fixture(scope="module")
def official(files):
    return make(files, numerics="official")


def test_official_numerics_keep_the_official_precisions(files, official):
    """fp16 text encoders; transformer and VAE in float32 holding float16-rounded weights."""
    parts = official.parts
    # both CLIPs in float16; T5 too, but for the layers transformers keeps in float32 (as it does officially)
    assert {p.dtype for encoder in parts.text_encoders[:2] for p in encoder.parameters()} == {torch.float16}
    t5 = parts.text_encoders[2]
    assert {n for n, p in t5.named_parameters() if p.dtype != torch.float16} == {
        n for n, _ in t5.named_parameters() if any(keep in n for keep in t5._keep_in_fp32_modules or ())
    }
    bare = make(files, adapters="")
    plain = dict(bare.parts.transformer.named_parameters())
    for name, weight in parts.transformer.named_parameters():
        if name.endswith((".up", ".down")):
            continue
        assert weight.dtype == torch.float32
        assert torch.equal(weight, plain[name.replace(".linear.linear.", ".linear.")].half().float()), name
    assert "official precisions" in official.card().architecture


def test_official_numerics_apply_the_transformer_lora_unmerged_with_a_half_output(files, official):
    norms = {n: m for n, m in official.parts.transformer.named_modules() if type(m).__name__ == "AdaLayerNormZero"}
    assert len(norms) == len(files["pairs"])
    for name, up, down in files["pairs"]:
        layer = norms[name.removesuffix(".linear")].linear
        x = torch.randn(2, layer.linear.in_features)
        out = layer(x)
        expected = (layer.linear(x) + (x @ down.float().T) @ up.float().T).half()
        assert out.dtype == torch.float16 and torch.equal(out, expected)


def test_official_numerics_use_peft_layers_on_the_vae_encoder(official, files):
    assert any("lora_A" in name for name, _ in official.parts.vae.encoder.named_parameters())
    pixels = image(64, 64).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        ours = official.parts.vae.encoder(pixels)
        reference = files["reference_vae"].encoder(pixels)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3)


def test_official_numerics_change_the_output_by_at_most_a_few_levels(backbone, official):
    view = resize(image(), (64, 64), "bicubic")
    ours, theirs = backbone.restore(view, "a red cat"), official.restore(view, "a red cat")
    levels = (ours - theirs).abs() * 255
    assert levels.max() > 0 and levels.mean() < 2.0


def test_numerics_official_is_refused_where_it_has_no_meaning(files, tmp_path):
    with pytest.raises(ChainZoomError, match="numerics must be one of chainzoom, official"):
        make(files, numerics="exact")
    sd21 = build_sd21(tmp_path / "sd21")
    ckpt = tmp_path / "osediff.pkl"
    write_osediff_checkpoint(sd21, ckpt)
    from chainzoom.backbones.diffusion import sd21 as osediff_sd21

    with pytest.raises(ChainZoomError, match="defined for osediff-sd3 only"):
        osediff_sd21.create(f"{sd21},ckpt={ckpt}", Runtime(device="cpu"), numerics="official")
