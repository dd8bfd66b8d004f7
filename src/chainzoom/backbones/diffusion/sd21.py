"""OSEDiff on Stable Diffusion 2.1-base (Wu et al., NeurIPS 2024): the original one-step SR.

Spec: ``osediff-sd21:BASE,ckpt=PATH``. ``BASE`` is a local diffusers folder of SD 2.1-base
(or a hub id the user names); ``ckpt`` is the published ``osediff.pkl``: a dict with
``state_dict_unet`` (PEFT LoRA pairs of three adapters, plus the fully trained
``conv_in``), ``state_dict_vae`` (the VAE-encoder LoRA), ``rank_unet``, ``rank_vae``
and the lists of adapted module names (not needed here: the state dict names them).

The step, as in the OSEDiff repository: the latent is ``vae.encode(x).sample() *
0.18215``; the UNet predicts the noise at t = 999 conditioned on the CLIP text
embedding; the DDPM update from t = 999 with one inference step is exactly the x0
prediction ``(z - sqrt(1 - a) * eps) / sqrt(a)`` with ``a = alphas_cumprod[999]`` (its
variance term is 0), computed here directly, which also sidesteps the
``set_timesteps(1)`` trap of diffusers' DDPM scheduler (it gives timestep 0 unless
``timestep_spacing="trailing"``). The LoRAs (alpha 8 / rank) are merged into the weights.
OSEDiff's default colour fix is AdaIN, and so it is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from chainzoom.backbones.diffusion.common import (
    Family,
    OneStepDiffusionSR,
    Opened,
    load_part,
    open_spec,
)
from chainzoom.backbones.diffusion.lora_merge import (
    load_base_weights,
    load_checkpoint,
    merge_peft_loras,
    split_peft_state_dict,
)
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import PreTrainedTokenizerBase

TIMESTEP = 999
CHECKPOINT_KEYS = ("state_dict_unet", "state_dict_vae", "rank_unet", "rank_vae")
FAMILY = Family(
    id="osediff-sd21",
    pipeline_class="StableDiffusionPipeline",
    roles=("ckpt",),
    required=("ckpt",),
    default_color_fix="adain",
    licence="set by the base model and the checkpoint (SD 2.1: CreativeML Open RAIL++-M)",
    timestep=TIMESTEP,
)


@dataclass
class SD21Parts:
    """The components of an SD 2.1 diffusers folder that one step needs."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    tokenizer: PreTrainedTokenizerBase
    text_encoder: nn.Module
    alpha_cumprod: float

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder]


def create(argument: str | None, runtime: Runtime, **options: Any) -> OSEDiffSD21:
    """Factory for ``osediff-sd21:BASE,ckpt=PATH``."""
    opened = open_spec(FAMILY, argument, runtime, options)
    if opened.options.numerics == "official":
        raise ChainZoomError(
            "osediff-sd21: numerics official reproduces Chain-of-Zoom's SD3 inference; it is defined "
            "for osediff-sd3 only"
        )
    path = opened.adapters["ckpt"]
    checkpoint = read_osediff_checkpoint(path)
    parts = load_sd21(opened.base, opened.dtype)
    apply_osediff_checkpoint(parts, checkpoint, f"ckpt file {path}")
    return OSEDiffSD21(parts, opened, runtime)


class OSEDiffSD21(OneStepDiffusionSR):
    """One OSEDiff step on SD 2.1: VAE encode, one UNet step at t=999, VAE decode."""

    def __init__(self, parts: SD21Parts, opened: Opened, runtime: Runtime) -> None:
        self.parts = parts
        super().__init__(
            FAMILY,
            opened,
            runtime,
            vae=parts.vae,
            groups={"text": [parts.text_encoder], "sr": [parts.unet, parts.vae]},
            description="OSEDiff one-step SR on Stable Diffusion 2.1-base",
            architecture="SD 2.1 UNet + 4-channel VAE, one DDPM step at t=999, LoRA merged",
            multiple=2 ** (len(parts.vae.config["block_out_channels"]) - 1),
            max_side=None,
        )

    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor]:
        return (encode_prompt(self.parts, prompt, self.device).to(self.dtype),)

    def _denoise(self, latent: torch.Tensor, condition: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return one_step(self.parts.unet, latent, condition[0], self.parts.alpha_cumprod)


def encode_prompt(parts: SD21Parts, prompt: str, device: torch.device) -> torch.Tensor:
    """The CLIP text embedding ``[1, 77, width]`` of ``prompt`` (shared with training)."""
    tokenizer = parts.tokenizer
    ids = tokenizer(
        prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    embeds: torch.Tensor = parts.text_encoder(ids.to(device))[0]
    return embeds


def one_step(unet: nn.Module, latent: torch.Tensor, text: torch.Tensor, alpha_cumprod: float) -> torch.Tensor:
    """The one DDPM step from t = 999: the x0 prediction ``(z - sqrt(1 - a) eps) / sqrt(a)``.

    Shared by inference and training, so the two cannot diverge.
    """
    timestep = torch.tensor([TIMESTEP], device=latent.device, dtype=torch.long)
    noise = unet(latent, timestep, encoder_hidden_states=text).sample
    return ((latent.float() - (1.0 - alpha_cumprod) ** 0.5 * noise.float()) / alpha_cumprod**0.5).to(latent.dtype)


def load_sd21(base: str, dtype: torch.dtype) -> SD21Parts:
    """Load the SD 2.1 components from a diffusers folder (or hub id) on the CPU, frozen."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    scheduler = load_part(DDPMScheduler.from_pretrained, base, "scheduler")
    if scheduler.config.prediction_type != "epsilon":
        raise ChainZoomError(
            f"{FAMILY.id}: {base} predicts {scheduler.config.prediction_type!r}; OSEDiff was trained on the "
            "epsilon-predicting SD 2.1-base (stabilityai/stable-diffusion-2-1-base)"
        )
    unet = load_part(UNet2DConditionModel.from_pretrained, base, "unet", torch_dtype=dtype)
    vae = load_part(AutoencoderKL.from_pretrained, base, "vae", torch_dtype=dtype)
    text_encoder = load_part(CLIPTextModel.from_pretrained, base, "text_encoder", torch_dtype=dtype)
    return SD21Parts(
        unet=unet.eval().requires_grad_(False),
        vae=vae.eval().requires_grad_(False),
        tokenizer=load_part(AutoTokenizer.from_pretrained, base, "tokenizer"),
        text_encoder=text_encoder.eval().requires_grad_(False),
        alpha_cumprod=float(scheduler.alphas_cumprod[TIMESTEP]),
    )


def read_osediff_checkpoint(path: Path) -> dict:
    """Read ``osediff.pkl`` and check it is one (not a Chain-of-Zoom SD3 file)."""
    data = load_checkpoint(path, "OSEDiff checkpoint (ckpt=)")
    if isinstance(data, (list, tuple)):
        raise ChainZoomError(
            f"ckpt file {path} is a Chain-of-Zoom SD3 transformer LoRA (model_*.pkl): use osediff-sd3:BASE,lora=PATH"
        )
    if not isinstance(data, dict):
        raise ChainZoomError(f"ckpt file {path} is not an OSEDiff checkpoint dict")
    missing = [key for key in CHECKPOINT_KEYS if key not in data]
    if missing:
        hint = (
            " (it looks like the Chain-of-Zoom SD3 VAE-encoder file: use osediff-sd3:BASE,vae=PATH)"
            if any(".lora_A." in str(key) for key in data)
            else ""
        )
        raise ChainZoomError(f"ckpt file {path} is not an OSEDiff checkpoint: it lacks {', '.join(missing)}{hint}")
    for key in ("state_dict_unet", "state_dict_vae"):
        if not isinstance(data[key], dict):
            raise ChainZoomError(f"ckpt file {path}: {key} must be a state dict, got {type(data[key]).__name__}")
    for key in ("rank_unet", "rank_vae"):
        if not isinstance(data[key], int) or data[key] < 1:
            raise ChainZoomError(f"ckpt file {path}: {key} must be a positive integer, got {data[key]!r}")
    return data


def apply_osediff_checkpoint(parts: SD21Parts, checkpoint: dict, source: str) -> None:
    """Load the trained ``conv_in`` and merge the UNet and VAE-encoder LoRAs.

    As the official test code does, only the LoRA pairs of ``state_dict_vae`` are used
    (its training script also saves any ``skip`` weights there, which inference ignores).
    """
    unet = split_peft_state_dict(checkpoint["state_dict_unet"], f"{source} (state_dict_unet)")
    load_base_weights(parts.unet, unet.base, f"{source} (state_dict_unet)", strict=False)
    merge_peft_loras(parts.unet, unet.loras, f"{source} (state_dict_unet)", rank=checkpoint["rank_unet"])
    vae = split_peft_state_dict(checkpoint["state_dict_vae"], f"{source} (state_dict_vae)")
    merge_peft_loras(parts.vae, vae.loras, f"{source} (state_dict_vae)", rank=checkpoint["rank_vae"])
