"""OSEDiff on SD 2.1 on a tiny random SD 2.1 with an official-format osediff.pkl."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from chainzoom.backbones.diffusion import sd21 as osediff_sd21
from chainzoom.errors import ChainZoomError
from chainzoom.io.digest import file_sha256
from chainzoom.runtime import Runtime

from ..tiny_diffusion import build_sd3, build_sd21, write_osediff_checkpoint, write_sd3_transformer_lora


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd21")
    base = build_sd21(root / "base")
    ckpt = root / "osediff.pkl"
    reference_unet, reference_vae = write_osediff_checkpoint(base, ckpt)
    return {"root": root, "base": base, "ckpt": ckpt, "unet": reference_unet, "vae": reference_vae}


@pytest.fixture(scope="module")
def backbone(files):
    return make(files)


def make(files, runtime: Runtime | None = None, **options):
    return osediff_sd21.create(f"{files['base']},ckpt={files['ckpt']}", runtime or Runtime(device="cpu"), **options)


def image(height: int = 16, width: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def test_one_step_is_4x_in_range_float32(backbone):
    out = backbone.upscale(image(), "a red cat")
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.01
    assert backbone.upscale(image(15, 13), "a red cat").shape == (3, 60, 52)


def test_deterministic_and_prompt_aware(backbone):
    first = backbone.upscale(image(), "a red cat")
    assert torch.equal(first, backbone.upscale(image(), "a red cat"))
    assert (first - backbone.upscale(image(), "blue dog on a sofa")).abs().max() > 1e-3


def test_efficient_memory_agrees(files, backbone):
    efficient = make(files, efficient_memory=True)
    assert torch.equal(efficient.upscale(image(), "a cat"), backbone.upscale(image(), "a cat"))
    assert efficient.residency.resident == set()


def test_unet_and_vae_match_the_peft_wrapped_reference(files, backbone):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    text = torch.randn(1, 77, 16, generator=torch.Generator().manual_seed(6))
    timestep = torch.tensor([999])
    pixels = image(64, 64).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        ours = backbone.parts.unet(latent, timestep, encoder_hidden_states=text).sample
        reference = files["unet"](latent, timestep, encoder_hidden_states=text).sample
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
        ours = backbone.parts.vae.encode(pixels).latent_dist.mean
        reference = files["vae"].encode(pixels).latent_dist.mean
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_the_step_is_the_ddpm_x0_update_at_t999(files, backbone):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(files["base"], subfolder="scheduler", timestep_spacing="trailing")
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [osediff_sd21.TIMESTEP]
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    condition = backbone._encode_prompt("a red cat")
    with torch.no_grad():
        noise = backbone.parts.unet(latent, torch.tensor([999]), encoder_hidden_states=condition[0]).sample
        ours = backbone._denoise(latent, condition)
    expected = scheduler.step(noise, 999, latent).prev_sample
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_adain_is_the_default_colour_fix_and_card_names_the_checkpoint(files, backbone):
    assert backbone.settings()["color_fix"] == "adain"
    assert make(files, color_fix="none").settings()["color_fix"] == "none"
    card = backbone.card()
    assert card.id == "osediff-sd21" and card.text_aware
    assert card.weights_sha256 == file_sha256(files["ckpt"])
    assert backbone.settings()["adapters"]["ckpt"]["sha256"] == file_sha256(files["ckpt"])


def test_the_checkpoint_changes_the_output(files, backbone, tmp_path):
    checkpoint = torch.load(files["ckpt"], weights_only=True)
    for key in ("state_dict_unet", "state_dict_vae"):
        checkpoint[key] = {k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in checkpoint[key].items()}
    torch.save(checkpoint, tmp_path / "no_lora.pkl")
    no_lora = osediff_sd21.create(f"{files['base']},ckpt={tmp_path / 'no_lora.pkl'}", Runtime(device="cpu"))
    assert (no_lora.upscale(image(), "a cat") - backbone.upscale(image(), "a cat")).abs().max() > 1e-3


def test_sd3_files_and_base_are_refused_with_the_right_backbone(files):
    sd3 = build_sd3(files["root"] / "sd3")
    lora = files["root"] / "model_20001.pkl"
    write_sd3_transformer_lora(sd3, lora)
    with pytest.raises(ChainZoomError, match="osediff-sd3:BASE,lora="):
        osediff_sd21.create(f"{files['base']},ckpt={lora}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="holds a StableDiffusion3Pipeline"):
        osediff_sd21.create(f"{sd3},ckpt={files['ckpt']}", Runtime(device="cpu"))


def test_malformed_checkpoints_are_refused(files, tmp_path):
    checkpoint = torch.load(files["ckpt"], weights_only=True)
    vae_like = {"conv_in.lora_A.default_encoder.weight": torch.zeros(4, 3, 3, 3)}
    torch.save(vae_like, tmp_path / "vae.pt")
    with pytest.raises(ChainZoomError, match="SD3 VAE-encoder file"):
        osediff_sd21.create(f"{files['base']},ckpt={tmp_path / 'vae.pt'}", Runtime(device="cpu"))
    torch.save({**checkpoint, "rank_unet": 8}, tmp_path / "rank.pkl")
    with pytest.raises(ChainZoomError, match="rank 4, the file declares 8"):
        osediff_sd21.create(f"{files['base']},ckpt={tmp_path / 'rank.pkl'}", Runtime(device="cpu"))
    renamed = {k.replace("down_blocks", "middle_blocks"): v for k, v in checkpoint["state_dict_unet"].items()}
    torch.save({**checkpoint, "state_dict_unet": renamed}, tmp_path / "other.pkl")
    with pytest.raises(ChainZoomError, match="does not match the base model: LoRA on layers"):
        osediff_sd21.create(f"{files['base']},ckpt={tmp_path / 'other.pkl'}", Runtime(device="cpu"))
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ChainZoomError, match="cannot read"):
        osediff_sd21.create(f"{files['base']},ckpt={tmp_path / 'junk.pkl'}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="needs a base model and the OSEDiff checkpoint"):
        osediff_sd21.create(str(files["base"]), Runtime(device="cpu"))
