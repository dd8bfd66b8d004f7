"""OSEDiff on SD3: the trainable stack, one training step, and the official checkpoint files.

The recipe is the official one (Chain-of-Zoom's ``train_osediff_sd3.py`` after OSEDiff):

- the generator is the inference step itself (:func:`~chainzoom.backbones.diffusion.common.encode_latent`,
  :func:`~chainzoom.backbones.diffusion.sd3.one_step`, :func:`~chainzoom.backbones.diffusion.common.decode_latent`),
  with a rank-r LoRA (scale 1, up zero-initialised, down normal with std 1/r) on the
  ``nn.Linear`` of every ``AdaLayerNormZero`` of the transformer (adapter ``gen``) and a
  PEFT LoRA (alpha 8) on the VAE encoder's convolutions and attention projections
  (adapter ``default_encoder``, the official target rule);
- its loss is ``w_mse·MSE + w_lpips·LPIPS + w_vsd·DMD`` against the HR crop in ``[-1, 1]``.
  The DMD (variational score distillation) term draws one t per step from the
  1000-step shifted flow schedule, noises the generator's latent ``z0`` to
  ``z_t = (1-σ) z0 + σ ε``, predicts ``x̂ = z_t − σ v`` with the regulariser LoRA
  (``reg``) and with the frozen base (adapters off), and pulls ``z0`` along
  ``(x̂_reg − x̂_base) / mean|z0 − x̂_base|`` (``MSE(z0, sg(z0 − grad))``);
- after the generator's update, the ``reg`` LoRA learns the generator's outputs by
  denoising them (``MSE(x̂_reg(z_t), sg(z0))`` at a fresh t), as the official update order;
- AdamW (betas 0.9/0.999, weight decay 1e-2, eps 1e-8), constant learning rate,
  gradients clipped to norm 1 (generator LoRAs together, the regulariser apart).

Where this differs, and why: the official code deep-copies the transformer twice (a
generator and a regulariser beside the frozen base, on four GPUs); here the two LoRAs
are two PEFT adapters on one frozen transformer and the base is that transformer with
adapters disabled, which is the same function with a third of the memory. The
official encode during training subtracts the VAE shift while its inference does not;
here training encodes as inference does, unless ``subtract_shift`` asks for the
official behaviour. The official fp16 rounding of σ and of the LoRA activations is
not reproduced (weights are float32; on a GPU, ``--dtype`` runs the forward under
autocast).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chainzoom.backbones.diffusion.common import decode_latent, encode_latent
from chainzoom.backbones.diffusion.sd3 import SD3Parts, encode_prompt_official, load_sd3, one_step
from chainzoom.train.lpips import LPIPS

GEN, REG, VAE_ADAPTER = "gen", "reg", "default_encoder"
#: The official VAE-encoder LoRA target patterns.
VAE_LORA_PATTERNS = (
    "conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0",
)  # fmt: skip
TRAIN_TIMESTEPS = 1000
ADAMW = {"betas": (0.9, 0.999), "weight_decay": 1e-2, "eps": 1e-8}
MAX_GRAD_NORM = 1.0
#: Captions whose encodings are kept (``--captions sidecar`` has one per image).
PROMPT_CACHE = 64


def adaln_zero_names(transformer: nn.Module) -> list[str]:
    """Module names of the linears the official LoRA adapts, in its file's order (module traversal)."""
    return [f"{name}.linear" for name, m in transformer.named_modules() if type(m).__name__ == "AdaLayerNormZero"]


def vae_encoder_targets(vae: nn.Module) -> list[str]:
    """The official rule: non-bias, non-norm weights in the encoder matching a pattern, plus ``quant_conv``."""
    targets = set()
    for name, _ in vae.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        in_encoder = "encoder" in name and any(pattern in name for pattern in VAE_LORA_PATTERNS)
        if in_encoder or ("quant_conv" in name and "post_quant_conv" not in name):
            targets.add(name.removesuffix(".weight"))
    return sorted(targets)


@dataclass(frozen=True)
class StepLosses:
    """Every loss term of one step, unweighted (``reg`` is the regulariser's own loss; None: not computed)."""

    mse: float
    lpips: float | None
    vsd: float | None
    reg: float | None
    total: float


class Updater:
    """An AdamW over some parameters, with clipping and (for float16 autocast) a gradient scaler."""

    def __init__(self, groups: list[dict[str, Any]], scaler: bool) -> None:
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(groups, **ADAMW)  # type: ignore[arg-type]
        self.scaler = torch.amp.GradScaler("cuda") if scaler else None

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])


class OSEDiffTrainer(ABC):
    """What the families share: the step's order, the losses, the optimizers and the saved state.

    A family sets ``gen_params``, ``reg_params`` (empty without VSD) and ``vae_params``,
    calls :meth:`_make_updaters`, and implements the hooks below.
    """

    gen_params: dict[str, nn.Parameter]
    reg_params: dict[str, nn.Parameter]
    vae_params: dict[str, nn.Parameter]

    def __init__(
        self, weights: dict[str, float], device: torch.device, dtype: torch.dtype, lpips: LPIPS | None
    ) -> None:
        self.weights = weights
        self.device, self.dtype = device, dtype
        self.lpips = lpips.to(device) if lpips is not None else None
        self.use_vsd = weights["vsd"] > 0
        self.prompts: dict[str, tuple[torch.Tensor, ...]] = {}

    def _make_updaters(self, lr: float, extra: list[nn.Parameter] | None = None) -> None:
        half = self.dtype == torch.float16
        generator = [*self.gen_params.values(), *(extra or [])]
        self.gen_updater = Updater(
            [{"params": generator, "lr": lr}, {"params": list(self.vae_params.values()), "lr": lr}], scaler=half
        )
        reg = [{"params": list(self.reg_params.values()), "lr": lr}]
        self.reg_updater = Updater(reg, half) if self.use_vsd else None

    # ------------------------------------------------------------------ the family's hooks

    @abstractmethod
    def _encode_caption(self, caption: str) -> tuple[torch.Tensor, ...]:
        """The family's text conditioning of one caption, float32, each tensor with a batch axis of 1."""

    @abstractmethod
    def release_text_encoders(self) -> None:
        """Free the text encoders once every caption is encoded (one caption: the default)."""

    @abstractmethod
    def _use_generator(self) -> None:
        """Make the generator's adapters the active ones."""

    @abstractmethod
    def generate(self, lr_up: torch.Tensor, condition: tuple, generator: torch.Generator | None) -> tuple:
        """The inference step on ``lr_up`` ``[B,3,S,S]`` in ``[0, 1]``: (image in [-1, 1], latent z0).

        ``generator`` seeds the posterior sample; ``None`` takes the posterior mode.
        """

    @abstractmethod
    def _distribution_matching(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        """The DMD/VSD term on the generator's latent (gradients reach ``z0`` only)."""

    @abstractmethod
    def _regulariser_loss(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        """The regulariser's own loss on the detached generator latents (its adapter active)."""

    @abstractmethod
    def _use_regulariser(self) -> None:
        """Make the regulariser's adapter the active one."""

    @abstractmethod
    def official_files(self, step: int) -> dict[str, Any]:
        """The official checkpoint file(s) of ``step``: path under the run folder -> object to ``torch.save``."""

    # ------------------------------------------------------------------ shared

    def condition(self, captions: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """The text conditioning of each caption (cached on the CPU), stacked on the device."""
        encoded = []
        for caption in captions:
            if caption not in self.prompts:
                while len(self.prompts) >= PROMPT_CACHE:  # SD3's are 9.6 MB each: keep the latest
                    self.prompts.pop(next(iter(self.prompts)))
                with torch.no_grad():
                    self.prompts[caption] = tuple(t.cpu() for t in self._encode_caption(caption))
            encoded.append(self.prompts[caption])
        return tuple(torch.cat(list(tensors)).to(self.device) for tensors in zip(*encoded))

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        context = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()
        with context:
            yield

    def _groups(self) -> tuple[tuple[str, dict[str, nn.Parameter]], ...]:
        return (("gen", self.gen_params), ("reg", self.reg_params), ("vae", self.vae_params))

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every trained tensor (float32, CPU), by group: what exact resume restores."""
        return {group: {n: p.detach().cpu().clone() for n, p in params.items()} for group, params in self._groups()}

    def load_trainable_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for group, params in self._groups():
                saved = state[group]
                if set(saved) != set(params):
                    raise ValueError(f"the saved {group} LoRA does not match this model (another rank or base?)")
                for name, param in params.items():
                    param.copy_(saved[name])

    def optimizer_state(self) -> dict[str, Any]:
        return {
            "gen": self.gen_updater.state_dict(),
            "reg": self.reg_updater.state_dict() if self.reg_updater else None,
        }

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.gen_updater.load_state_dict(state["gen"])
        if self.reg_updater is not None:
            self.reg_updater.load_state_dict(state["reg"])

    def step(
        self, hr: torch.Tensor, lr_up: torch.Tensor, captions: Sequence[str], rng: np.random.Generator
    ) -> StepLosses:
        """One update of the generator LoRAs, then of the regulariser; every draw from ``rng``."""
        generator = torch.Generator("cpu").manual_seed(int(rng.integers(2**62)))
        condition = self.condition(captions)
        target = (hr * 2.0 - 1.0).to(self.device)
        w = self.weights
        self._use_generator()
        with self._autocast():
            image, z0 = self.generate(lr_up, condition, generator)
            image = image.float()
            mse = F.mse_loss(image, target)
            total = w["mse"] * mse
            lpips = None
            if self.lpips is not None and w["lpips"] > 0:
                lpips = self.lpips(image, target).mean()
                total = total + w["lpips"] * lpips
            vsd = None
            if self.use_vsd:
                vsd = self._distribution_matching(z0, condition, rng, generator)
                total = total + w["vsd"] * vsd
        self._use_generator()  # active again before backward: gradient checkpointing reruns the forward
        self.gen_updater.step(total)
        reg = None
        if self.reg_updater is not None:
            self._use_regulariser()
            with self._autocast():
                reg_loss = self._regulariser_loss(z0.detach(), condition, rng, generator)
            self.reg_updater.step(reg_loss)
            self._use_generator()
            reg = float(reg_loss.detach())
        return StepLosses(
            mse=float(mse.detach()),
            lpips=None if lpips is None else float(lpips.detach()),
            vsd=None if vsd is None else float(vsd.detach()),
            reg=reg,
            total=float(total.detach()),
        )


def set_trainable(params: Sequence[nn.Parameter]) -> None:
    """PEFT switches requires_grad with the active adapter; the trained set stays fixed."""
    for p in params:
        p.requires_grad_(True)


def lora_params(model: nn.Module, adapter: str) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if ".lora_" in n and f".{adapter}." in n}


class OSEDiffSD3Trainer(OSEDiffTrainer):
    """Chain-of-Zoom's backbone: SD3 with the AdaLayerNormZero LoRA; files ``model_*.pkl`` + ``vae_encoder_*.pt``."""

    @classmethod
    def from_folder(cls, base: str, weights: dict[str, float], **options: Any) -> OSEDiffSD3Trainer:
        """Load SD3 from a diffusers folder; the frozen parts in ``dtype`` (autocast does the rest)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        from chainzoom.backbones.diffusion.common import load_part

        scheduler = load_part(FlowMatchEulerDiscreteScheduler.from_pretrained, base, "scheduler")
        return cls(load_sd3(base, options["dtype"]), scheduler, weights, **options)

    def __init__(
        self,
        parts: SD3Parts,
        scheduler: Any,
        weights: dict[str, float],
        *,
        rank: int,
        lr: float,
        device: torch.device,
        dtype: torch.dtype,
        seed: int,
        lpips: LPIPS | None,
        subtract_shift: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        from peft import LoraConfig

        super().__init__(weights, device, dtype, lpips)
        self.subtract_shift = subtract_shift
        self.parts = parts
        self.transformer = self.parts.transformer.float().to(device)
        self.vae = self.parts.vae.float().to(device)
        scheduler.set_timesteps(TRAIN_TIMESTEPS)
        self.timesteps = scheduler.timesteps.float().cpu()

        self.linear_names = adaln_zero_names(self.transformer)
        adapters = [GEN, REG] if self.use_vsd else [GEN]
        for number, adapter in enumerate(adapters):
            torch.manual_seed(seed + number)  # the LoRA init is part of the seeded run
            config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=self.linear_names)
            with warnings.catch_warnings():  # PEFT warns that a second adapter is added: that is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.transformer.add_adapter(config, adapter_name=adapter)
        torch.manual_seed(seed + 2)
        vae_config = LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=vae_encoder_targets(self.vae))
        self.vae.add_adapter(vae_config, adapter_name=VAE_ADAPTER)
        self.gen_params = lora_params(self.transformer, GEN)
        self.reg_params = lora_params(self.transformer, REG) if self.use_vsd else {}
        self.vae_params = lora_params(self.vae, VAE_ADAPTER)
        self.transformer.requires_grad_(False)
        self.vae.requires_grad_(False)
        self._use(GEN)
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        self.transformer.train()
        self.vae.train()
        self._make_updaters(lr)

    def _use(self, adapter: str | None) -> None:
        """Make ``adapter`` the transformer's active LoRA (None: the frozen base)."""
        if adapter is None:
            self.transformer.disable_adapters()
        else:
            self.transformer.enable_adapters()
            self.transformer.set_adapter(adapter)
        set_trainable([*self.gen_params.values(), *self.reg_params.values(), *self.vae_params.values()])

    def _use_generator(self) -> None:
        self._use(GEN)

    def _use_regulariser(self) -> None:
        self._use(REG)

    def official_files(self, step: int) -> dict[str, Any]:
        """``model_<step>.pkl`` (``[up_0, down_0, ...]`` float32, AdaLayerNormZero order) and
        ``vae_encoder_<step>.pt`` (the PEFT-wrapped encoder's whole state dict in float16)."""
        tensors = []
        for name in self.linear_names:
            layer = self.transformer.get_submodule(name)
            tensors += [
                layer.lora_B[GEN].weight.detach().float().cpu().clone(),
                layer.lora_A[GEN].weight.detach().float().cpu().clone(),
            ]
        encoder = {k: v.detach().cpu().half() for k, v in self.vae.encoder.state_dict().items()}
        return {f"checkpoints/model_{step}.pkl": tensors, f"checkpoints/vae_encoder_{step}.pt": encoder}

    def _encode_caption(self, caption: str) -> tuple[torch.Tensor, ...]:
        for encoder in self.parts.text_encoders:
            encoder.to(self.device)
        return encode_prompt_official(self.parts, caption, self.device, torch.float32)

    def release_text_encoders(self) -> None:
        self.parts.text_encoders = tuple(nn.Identity() for _ in self.parts.text_encoders)  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sigma(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One t of the shifted 1000-step schedule per step (as officially), and its σ = t/1000."""
        t = self.timesteps[int(rng.uniform() * TRAIN_TIMESTEPS)]
        return t.expand(batch).to(self.device), (t / TRAIN_TIMESTEPS).to(self.device)

    def _x0(self, zt: torch.Tensor, t: torch.Tensor, sigma: torch.Tensor, condition: tuple) -> torch.Tensor:
        embeds, pooled = condition
        velocity = self.transformer(
            hidden_states=zt, timestep=t, encoder_hidden_states=embeds, pooled_projections=pooled, return_dict=False
        )[0]
        return zt - sigma * velocity

    def generate(self, lr_up: torch.Tensor, condition: tuple, generator: torch.Generator | None) -> tuple:
        pixels = (lr_up * 2.0 - 1.0).to(self.device)
        latent = encode_latent(self.vae, pixels, generator, subtract_shift=self.subtract_shift)
        z0 = one_step(self.transformer, latent, *condition)
        return decode_latent(self.vae, z0, torch.float32), z0

    def _noised(self, z0: torch.Tensor, rng: np.random.Generator, generator: torch.Generator) -> tuple:
        t, sigma = self._sigma(rng, z0.shape[0])
        noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(self.device, z0.dtype)
        return (1 - sigma) * z0 + sigma * noise, t, sigma

    def _distribution_matching(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        with torch.no_grad():
            zt, t, sigma = self._noised(z0.detach(), rng, generator)
            self._use(REG)
            fake = self._x0(zt, t, sigma, condition).float()
            self._use(None)
            real = self._x0(zt, t, sigma, condition).float()
            weighting = (z0.detach().float() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
            grad = (fake - real) / weighting
        return F.mse_loss(z0.float(), (z0.float() - grad).detach())

    def _regulariser_loss(
        self, z0: torch.Tensor, condition: tuple, rng: np.random.Generator, generator: torch.Generator
    ) -> torch.Tensor:
        zt, t, sigma = self._noised(z0, rng, generator)
        return F.mse_loss(self._x0(zt, t, sigma, condition).float(), z0.float())
