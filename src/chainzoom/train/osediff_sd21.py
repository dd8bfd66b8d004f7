"""OSEDiff on SD 2.1-base (the original OSEDiff): the trainer writing ``osediff.pkl`` for ``osediff-sd21``.

OSEDiff's recipe (Wu et al. 2024, its ``train_osediff.py``), as read here:

- the generator is the inference step (:func:`chainzoom.backbones.diffusion.sd21.one_step`:
  the UNet's noise prediction at t = 999 turned into the x0 prediction), with rank-r PEFT
  LoRAs (alpha 8) on the UNet as three adapters (``default_encoder`` on down blocks and
  ``conv_in``, ``default_decoder`` on up blocks and ``conv_out``, ``default_others``),
  ``conv_in`` trained fully, and a LoRA on the VAE encoder (and ``quant_conv``);
- VSD against the frozen base with classifier-free guidance 7.5 and OSEDiff's negative
  prompt, t uniform in [20, 980) per image, DDPM noising; the regulariser LoRA learns the
  generator's latents with the plain noise-prediction loss at t uniform in [0, 1000).

The generator's UNet is a copy of the base (``conv_in`` is trained whole, so it cannot
share the base's weights); the regulariser is a single PEFT adapter (``reg``) on the
frozen base UNet, and the base is that UNet with adapters disabled (OSEDiff keeps a
third UNet). The regulariser's ``conv_in`` is not trained. ``osediff_<step>.pkl`` holds
OSEDiff's keys: the module lists, ``rank_unet``/``rank_vae``, ``state_dict_unet`` (LoRA +
``conv_in``) and ``state_dict_vae`` (LoRA).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chainzoom.backbones.diffusion.common import decode_latent, encode_latent, load_part
from chainzoom.backbones.diffusion.sd21 import SD21Parts, encode_prompt, load_sd21, one_step
from chainzoom.train.lpips import LPIPS
from chainzoom.train.osediff import VAE_ADAPTER, OSEDiffTrainer, lora_params, set_trainable, vae_encoder_targets

#: The official UNet LoRA target patterns.
UNET_LORA_PATTERNS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
    "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip
UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")
REG = "reg"
CFG_VSD = 7.5
DMD_TIMESTEPS = (20, 980)
NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, unreal engine, "
    "blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg artifacts, deformed, "
    "lowres, over-smooth"
)


def unet_lora_groups(unet: nn.Module) -> dict[str, list[str]]:
    """OSEDiff's split of the UNet's LoRA targets into its three adapters."""
    groups: dict[str, list[str]] = {name: [] for name in UNET_ADAPTERS}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(p in name for p in UNET_LORA_PATTERNS):
            continue
        module = name.removesuffix(".weight")
        if "down_blocks" in name or "conv_in" in name:
            groups["default_encoder"].append(module)
        elif "up_blocks" in name or "conv_out" in name:
            groups["default_decoder"].append(module)
        else:
            groups["default_others"].append(module)
    return groups


class OSEDiffSD21Trainer(OSEDiffTrainer):
    """OSEDiff on SD 2.1-base; its file is ``osediff_<step>.pkl``."""

    def __init__(
        self,
        base: str,
        weights: dict[str, float],
        *,
        rank: int,
        lr: float,
        device: torch.device,
        dtype: torch.dtype,
        seed: int,
        lpips: LPIPS | None,
        gradient_checkpointing: bool = False,
    ) -> None:
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        super().__init__(weights, device, dtype, lpips)
        self.rank = rank
        self.parts: SD21Parts = load_sd21(base, dtype)
        scheduler = load_part(DDPMScheduler.from_pretrained, base, "scheduler")
        self.alphas = scheduler.alphas_cumprod.float().to(device)
        self.vae = self.parts.vae.float().to(device)
        base_unet = self.parts.unet.float()
        self.gen_unet = copy.deepcopy(base_unet).to(device)
        self.groups = unet_lora_groups(self.gen_unet)
        with warnings.catch_warnings():  # PEFT warns that more adapters are added: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for number, (adapter, targets) in enumerate(self.groups.items()):
                torch.manual_seed(seed + number)
                config = LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets)
                self.gen_unet.add_adapter(config, adapter_name=adapter)
        self.gen_unet.set_adapter(list(UNET_ADAPTERS))
        torch.manual_seed(seed + 3)
        self.vae_targets = vae_encoder_targets(self.vae)
        self.vae.add_adapter(
            LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=self.vae_targets), adapter_name=VAE_ADAPTER
        )
        self.gen_unet.requires_grad_(False)
        self.vae.requires_grad_(False)
        conv_in = {f"conv_in.{n}": p for n, p in self.gen_unet.conv_in.named_parameters() if ".lora_" not in f".{n}"}
        self.gen_params = {n: p for a in UNET_ADAPTERS for n, p in lora_params(self.gen_unet, a).items()} | conv_in
        self.vae_params = lora_params(self.vae, VAE_ADAPTER)
        self.reg_params = {}
        self.reg_unet: nn.Module | None = None
        if self.use_vsd:
            self.reg_unet = base_unet.to(device)
            torch.manual_seed(seed + 4)
            targets = sorted(t for group in self.groups.values() for t in group)
            self.reg_unet.add_adapter(  # type: ignore[operator]
                LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name=REG
            )
            self.reg_unet.requires_grad_(False)
            self.reg_params = lora_params(self.reg_unet, REG)
        for model in (self.gen_unet, self.vae, self.reg_unet):
            if model is None:
                continue
            if gradient_checkpointing:
                model.enable_gradient_checkpointing()  # type: ignore[operator]
            model.train()
        self._use_generator()
        with torch.no_grad():
            self.negative = self._encode_caption(NEGATIVE_PROMPT)[0].to(device)
        self._make_updaters(lr)

    # ------------------------------------------------------------------ hooks

    def _use_generator(self) -> None:
        set_trainable([*self.gen_params.values(), *self.reg_params.values(), *self.vae_params.values()])

    def _use_regulariser(self) -> None:
        self._use_reg(True)

    def _use_reg(self, enabled: bool) -> None:
        assert self.reg_unet is not None
        if enabled:
            self.reg_unet.enable_adapters()  # type: ignore[operator]
            self.reg_unet.set_adapter(REG)  # type: ignore[operator]
        else:
            self.reg_unet.disable_adapters()  # type: ignore[operator]
        self._use_generator()

    def _encode_caption(self, caption: str) -> tuple[torch.Tensor, ...]:
        self.parts.text_encoder.to(self.device)
        return (encode_prompt(self.parts, caption, self.device).float(),)

    def release_text_encoders(self) -> None:
        self.parts.text_encoder = nn.Identity()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, lr_up: torch.Tensor, condition: tuple, generator: torch.Generator | None) -> tuple:
        pixels = (lr_up * 2.0 - 1.0).to(self.device)
        latent = encode_latent(self.vae, pixels, generator)
        z0 = one_step(self.gen_unet, latent, condition[0], self.parts.alpha_cumprod)
        return decode_latent(self.vae, z0, torch.float32), z0

    def _noised(self, z0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> tuple:
        noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(self.device, z0.dtype)
        alpha = self.alphas[t].view(-1, 1, 1, 1)
        return alpha.sqrt() * z0 + (1 - alpha).sqrt() * noise, noise, alpha

    def _timesteps(self, rng: np.random.Generator, batch: int, low: int, high: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(low, high, batch)).long().to(self.device)

    def _distribution_matching(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        assert self.reg_unet is not None
        text = condition[0]
        with torch.no_grad():
            t = self._timesteps(rng, z0.shape[0], *DMD_TIMESTEPS)
            zt, _, alpha = self._noised(z0.detach(), t, generator)
            self._use_reg(True)
            fake_eps = self.reg_unet(zt, t, encoder_hidden_states=text).sample.float()
            self._use_reg(False)
            negative = self.negative.expand_as(text)
            both = self.reg_unet(
                torch.cat([zt, zt]), torch.cat([t, t]), encoder_hidden_states=torch.cat([negative, text])
            ).sample.float()
            self._use_reg(True)
            uncond, cond = both.chunk(2)
            real_eps = uncond + CFG_VSD * (cond - uncond)
            fake = (zt.float() - (1 - alpha).sqrt() * fake_eps) / alpha.sqrt()
            real = (zt.float() - (1 - alpha).sqrt() * real_eps) / alpha.sqrt()
            weighting = (z0.detach().float() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
            grad = (fake - real) / weighting
        return F.mse_loss(z0.float(), (z0.float() - grad).detach())

    def _regulariser_loss(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        assert self.reg_unet is not None
        t = self._timesteps(rng, z0.shape[0], 0, len(self.alphas))
        zt, noise, _ = self._noised(z0, t, generator)
        predicted = self.reg_unet(zt, t, encoder_hidden_states=condition[0]).sample
        return F.mse_loss(predicted.float(), noise.float())

    def official_files(self, step: int) -> dict[str, Any]:
        unet = {
            k: v.detach().cpu().clone() for k, v in self.gen_unet.state_dict().items() if "lora" in k or "conv_in" in k
        }
        vae = {k: v.detach().cpu().clone() for k, v in self.vae.state_dict().items() if "lora" in k or "skip" in k}
        checkpoint = {
            "vae_lora_encoder_modules": self.vae_targets,
            "unet_lora_encoder_modules": self.groups["default_encoder"],
            "unet_lora_decoder_modules": self.groups["default_decoder"],
            "unet_lora_others_modules": self.groups["default_others"],
            "rank_unet": self.rank,
            "rank_vae": self.rank,
            "state_dict_unet": unet,
            "state_dict_vae": vae,
        }
        return {f"checkpoints/osediff_{step}.pkl": checkpoint}
