"""OSEDiff on Stable Diffusion 3 medium: Chain-of-Zoom's own SR backbone.

Spec: ``osediff-sd3:BASE[,lora=PATH][,vae=PATH]``. ``BASE`` is a local diffusers
folder of SD3 medium (or a hub id the user names; nothing is downloaded offline).
``lora`` is the official transformer LoRA ``ckpt/SR_LoRA/model_20001.pkl`` and
``vae`` the official VAE-encoder file ``ckpt/SR_VAE/vae_encoder_20001.pt``; without
them this is plain SD3 run for one step, which is not an SR model.

What the official inference does, and so what this does:

- all of SD3 is used, T5-XXL included; the prompt is encoded the official way, which
  differs from diffusers' pipeline: both CLIPs tokenised to 77 tokens, their
  penultimate hidden states concatenated and zero-padded to T5's width, T5 tokenised
  to 512 tokens, giving a 589-token sequence; the pooled vector is both CLIPs'
  projected outputs concatenated;
- one flow-matching Euler step from sigma 1 to 0 at t = 1000 (what
  ``FlowMatchEulerDiscreteScheduler.set_timesteps(1)`` gives for any shift):
  ``z_out = z_lr - v(z_lr, 1000, prompt)``;
- the transformer LoRA (rank 4, scale 1) sits on the ``nn.Linear`` inside every
  ``AdaLayerNormZero`` (47 in SD3 medium: ``norm1`` of the 24 blocks and
  ``norm1_context`` of the first 23). ``model_20001.pkl`` is ``torch.save`` of a list
  ``[up_0, down_0, up_1, down_1, ...]`` in module-traversal order;
- the VAE-encoder file is the whole PEFT-wrapped ``vae.encoder`` state dict (base
  weights in float16 plus ``lora_A/lora_B.default_encoder`` pairs, alpha 8), loaded
  strictly: its base weights replace the base model's encoder weights, as officially.

The official code keeps the LoRAs separate (a ``LoraInjectedLinear``, PEFT layers on the
VAE encoder); by default they are merged into the weights here, which gives the same
function at no run-time cost but may flip a pixel by one level. ``numerics="official"``
reproduces the official inference's precisions instead, for ``--protocol official``:
the whole pipeline loaded in float16 (so every weight is rounded to float16) with the
transformer and VAE then cast to float32, the text encoders left in float16, the
transformer LoRA applied unmerged as ``(linear(x) + up(down(x)) * scale).half()``, and
the VAE-encoder LoRA as PEFT layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from chainzoom.backbones.diffusion.common import (
    Family,
    OneStepDiffusionSR,
    Opened,
    load_part,
    open_spec,
)
from chainzoom.backbones.diffusion.lora_merge import (
    PEFT_DEFAULT_LORA_ALPHA,
    load_base_weights,
    load_checkpoint,
    merge_low_rank,
    merge_peft_loras,
    split_peft_state_dict,
)
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel

#: t of the one step: ``set_timesteps(1)`` of the flow-matching scheduler gives sigma 1.
TIMESTEP = 1000.0
CLIP_TOKENS = 77
T5_TOKENS = 512
#: The transformer LoRA of the official code: plain sum, no alpha.
TRANSFORMER_LORA_SCALE = 1.0
FAMILY = Family(
    id="osediff-sd3",
    pipeline_class="StableDiffusion3Pipeline",
    roles=("lora", "vae"),
    required=(),
    default_color_fix="none",
    licence="set by the base model and the adapter files (SD3 medium: Stability AI Community License)",
    timestep=TIMESTEP,
)


@dataclass
class SD3Parts:
    """The components of an SD3 diffusers folder that one step needs."""

    transformer: SD3Transformer2DModel
    vae: AutoencoderKL
    tokenizers: tuple
    text_encoders: tuple[nn.Module, nn.Module, nn.Module]

    def modules(self) -> list[nn.Module]:
        return [self.transformer, self.vae, *self.text_encoders]


def create(argument: str | None, runtime: Runtime, **options: Any) -> OSEDiffSD3:
    """Factory for ``osediff-sd3:BASE[,lora=PATH][,vae=PATH]``."""
    opened = open_spec(FAMILY, argument, runtime, options)
    adapters = opened.adapters
    transformer_lora = read_transformer_lora(adapters["lora"]) if "lora" in adapters else None
    encoder_state = read_vae_encoder(adapters["vae"]) if "vae" in adapters else None

    official = opened.options.numerics == "official"
    if official and opened.dtype != torch.float32:
        raise ChainZoomError(
            "osediff-sd3: numerics official runs the transformer and VAE in float32, as the official "
            "inference does; use --dtype float32"
        )
    parts = load_sd3(opened.base, opened.dtype, official)
    if transformer_lora is not None:
        source = f"lora file {adapters['lora']}"
        if official:
            inject_transformer_lora(parts.transformer, transformer_lora, source)
        else:
            merge_transformer_lora(parts.transformer, transformer_lora, source)
    if encoder_state is not None:
        source = f"vae file {adapters['vae']}"
        if official:
            inject_vae_encoder(parts.vae, encoder_state, source)
        else:
            load_vae_encoder(parts.vae, encoder_state, source)
    return OSEDiffSD3(parts, opened, runtime)


class OSEDiffSD3(OneStepDiffusionSR):
    """One OSEDiff step on SD3: VAE encode, one transformer step at t=1000, VAE decode."""

    def __init__(self, parts: SD3Parts, opened: Opened, runtime: Runtime) -> None:
        self.parts = parts
        vae_factor = 2 ** (len(parts.vae.config["block_out_channels"]) - 1)
        patch = parts.transformer.config["patch_size"]
        description = "OSEDiff one-step SR on Stable Diffusion 3 medium (Chain-of-Zoom's backbone)"
        if set(opened.adapters) != {"lora", "vae"}:
            description += "; without both official adapter files this is not the trained SR model"
        super().__init__(
            FAMILY,
            opened,
            runtime,
            vae=parts.vae,
            groups={"text": list(parts.text_encoders), "sr": [parts.transformer, parts.vae]},
            description=description,
            architecture="SD3 MMDiT + 16-channel VAE, one flow step at t=1000, "
            + ("official precisions, LoRAs unmerged" if opened.options.numerics == "official" else "LoRA merged"),
            multiple=vae_factor * patch,
            max_side=parts.transformer.config["pos_embed_max_size"] * patch * vae_factor,
        )

    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_prompt_official(self.parts, prompt, self.device, self.dtype)

    def _denoise(self, latent: torch.Tensor, condition: tuple[torch.Tensor, ...]) -> torch.Tensor:
        prompt_embeds, pooled = condition
        return one_step(self.parts.transformer, latent, prompt_embeds, pooled)


def one_step(
    transformer: nn.Module, latent: torch.Tensor, prompt_embeds: torch.Tensor, pooled: torch.Tensor
) -> torch.Tensor:
    """The one Euler step from sigma 1 to 0 at t = 1000: ``z - v(z, 1000, prompt)``.

    Shared by inference and training, so the two cannot diverge.
    """
    timestep = torch.full((latent.shape[0],), TIMESTEP, device=latent.device)
    velocity = transformer(
        hidden_states=latent,
        timestep=timestep,
        encoder_hidden_states=prompt_embeds,
        pooled_projections=pooled,
        return_dict=False,
    )[0]
    return latent - velocity


def encode_prompt_official(
    parts: SD3Parts, prompt: str, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain-of-Zoom's SD3 text encoding: ([1, 77+512, T5 width], [1, pooled width])."""
    clip_states, pooled = [], []
    for tokenizer, encoder in zip(parts.tokenizers[:2], parts.text_encoders[:2]):
        ids = tokenizer(
            prompt, padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids
        output = encoder(ids.to(device), output_hidden_states=True)
        clip_states.append(output.hidden_states[-2])
        pooled.append(output.text_embeds)
    ids = parts.tokenizers[2](
        prompt,
        padding="max_length",
        max_length=T5_TOKENS,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    ).input_ids
    t5_states = parts.text_encoders[2](ids.to(device))[0]
    clip = torch.cat(clip_states, dim=-1)
    clip = F.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
    sequence = torch.cat([clip.to(t5_states.dtype), t5_states], dim=-2)
    return sequence.to(dtype), torch.cat(pooled, dim=-1).to(dtype)


def load_sd3(base: str, dtype: torch.dtype, official: bool = False) -> SD3Parts:
    """Load the SD3 components from a diffusers folder (or hub id) on the CPU, frozen.

    ``official``: everything loads in float16 (the official ``StableDiffusion3Base``) and
    the transformer and VAE are then cast to float32; the text encoders stay in float16.
    """
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

    models = {
        "transformer": (SD3Transformer2DModel, "transformer"),
        "vae": (AutoencoderKL, "vae"),
        "clip_l": (CLIPTextModelWithProjection, "text_encoder"),
        "clip_g": (CLIPTextModelWithProjection, "text_encoder_2"),
        "t5": (T5EncoderModel, "text_encoder_3"),
    }
    loaded = {
        key: load_part(cls.from_pretrained, base, folder, torch_dtype=torch.float16 if official else dtype)
        .eval()
        .requires_grad_(False)
        for key, (cls, folder) in models.items()
    }
    if official:
        loaded["transformer"].to(torch.float32)
        loaded["vae"].to(torch.float32)
    tokenizers = tuple(
        load_part(AutoTokenizer.from_pretrained, base, folder) for folder in ("tokenizer", "tokenizer_2", "tokenizer_3")
    )
    return SD3Parts(
        transformer=loaded["transformer"],
        vae=loaded["vae"],
        tokenizers=tokenizers,
        text_encoders=(loaded["clip_l"], loaded["clip_g"], loaded["t5"]),
    )


def adaln_zero_linears(transformer: nn.Module) -> list[nn.Linear]:
    """The linears the official LoRA adapts, in the order its file lists them."""
    return [
        cast(nn.Linear, module.linear)
        for module in transformer.modules()
        if type(module).__name__ == "AdaLayerNormZero"
    ]


def read_transformer_lora(path: Path) -> list[torch.Tensor]:
    """Read ``model_*.pkl``: a flat list of ``[up, down]`` tensors."""
    data = load_checkpoint(path, "transformer LoRA (lora=)")
    if isinstance(data, dict):
        if "state_dict_unet" in data:
            hint = "it is an OSEDiff SD 2.1 checkpoint (osediff.pkl): use osediff-sd21:BASE,ckpt=PATH"
        else:
            hint = "it is a state dict (the VAE-encoder file vae_encoder_*.pt goes to vae=)"
        raise ChainZoomError(f"lora file {path} is not the official SD3 transformer LoRA list: {hint}")
    if not isinstance(data, (list, tuple)) or not data or len(data) % 2:
        raise ChainZoomError(f"lora file {path} is not a list of [up, down] tensor pairs")
    if not all(isinstance(tensor, torch.Tensor) and tensor.dim() == 2 for tensor in data):
        raise ChainZoomError(f"lora file {path} holds entries that are not 2-D tensors")
    return list(data)


def merge_transformer_lora(transformer: nn.Module, tensors: list[torch.Tensor], source: str) -> None:
    """Merge the official ``[up, down]`` pairs into the AdaLayerNormZero linears."""
    linears = adaln_zero_linears(transformer)
    _check_pair_count(tensors, len(linears), source)
    for index, linear in enumerate(linears):
        up, down = tensors[2 * index], tensors[2 * index + 1]
        merge_low_rank(linear, up, down, TRANSFORMER_LORA_SCALE, f"{source}: pair {index}")


class InjectedLoraLinear(nn.Module):
    """The official ``LoraInjectedLinear`` at inference: ``(linear(x) + up(down(x)) * scale).half()``.

    Kept unmerged, in that order of operations, because merging flips a few pixels by one
    level, which a chain then amplifies (measured: docs/parity.md).
    """

    def __init__(self, linear: nn.Linear, up: torch.Tensor, down: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.linear = linear
        self.up = nn.Parameter(up.float(), requires_grad=False)
        self.down = nn.Parameter(down.float(), requires_grad=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear(x) + F.linear(F.linear(x, self.down), self.up) * self.scale).half()


def inject_transformer_lora(transformer: nn.Module, tensors: list[torch.Tensor], source: str) -> None:
    """Wrap each AdaLayerNormZero linear with its official ``[up, down]`` pair, unmerged."""
    norms = [module for module in transformer.modules() if type(module).__name__ == "AdaLayerNormZero"]
    _check_pair_count(tensors, len(norms), source)
    for index, norm in enumerate(norms):
        linear = cast(nn.Linear, norm.linear)
        up, down = tensors[2 * index], tensors[2 * index + 1]
        if up.shape != (linear.out_features, down.shape[0]) or down.shape[1] != linear.in_features:
            raise ChainZoomError(
                f"{source}: pair {index}: LoRA shapes up {tuple(up.shape)} / down {tuple(down.shape)} do not fit "
                f"a {linear.in_features}->{linear.out_features} layer (LoRA made for another base model?)"
            )
        norm.linear = InjectedLoraLinear(linear, up, down, TRANSFORMER_LORA_SCALE)


def _check_pair_count(tensors: list[torch.Tensor], layers: int, source: str) -> None:
    if len(tensors) != 2 * layers:
        raise ChainZoomError(
            f"{source} holds {len(tensors) // 2} LoRA pairs, but the base transformer has {layers} "
            "AdaLayerNormZero layers (SD3 medium has 47): a LoRA for another base model?"
        )


def read_vae_encoder(path: Path) -> dict[str, torch.Tensor]:
    """Read ``vae_encoder_*.pt``: the PEFT-wrapped encoder's whole state dict."""
    data = load_checkpoint(path, "VAE-encoder weights (vae=)")
    if isinstance(data, (list, tuple)):
        raise ChainZoomError(f"vae file {path} is the transformer LoRA list (model_*.pkl): pass it as lora=")
    if not isinstance(data, dict):
        raise ChainZoomError(f"vae file {path} is not a state dict")
    if "state_dict_vae" in data:
        raise ChainZoomError(
            f"vae file {path} is an OSEDiff SD 2.1 checkpoint (osediff.pkl): use osediff-sd21:BASE,ckpt=PATH"
        )
    return data


def load_vae_encoder(vae: AutoencoderKL, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Replace the encoder's weights with the file's and merge its LoRA pairs."""
    weights = split_peft_state_dict(state_dict, source)
    load_base_weights(vae.encoder, weights.base, source, strict=True)
    merge_peft_loras(vae.encoder, weights.loras, source)


def inject_vae_encoder(vae: AutoencoderKL, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """The official way: PEFT LoRA layers on the encoder (alpha 8), then the file loaded strictly."""
    from peft import LoraConfig, inject_adapter_in_model

    weights = split_peft_state_dict(state_dict, source)
    adapters = {key.split(".lora_A.")[1].split(".")[0] for key in state_dict if ".lora_A." in key}
    ranks = {pairs[0][0].shape[0] for pairs in weights.loras.values()}
    if len(adapters) != 1 or len(ranks) != 1:
        raise ChainZoomError(
            f"{source}: expected one LoRA adapter of one rank on the VAE encoder, found adapters "
            f"{sorted(adapters)} with ranks {sorted(ranks)}"
        )
    layers = {name for name, m in vae.encoder.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    unknown = sorted(set(weights.loras) - layers)
    if unknown:
        raise ChainZoomError(f"{source} does not match the base model: LoRA on layers it lacks ({unknown[:3]})")
    config = LoraConfig(
        r=ranks.pop(), lora_alpha=int(PEFT_DEFAULT_LORA_ALPHA), target_modules=sorted(weights.loras), lora_dropout=0.0
    )
    inject_adapter_in_model(config, vae.encoder, adapter_name=adapters.pop())
    result = vae.encoder.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ChainZoomError(
            f"{source} does not match the base model: missing {result.missing_keys[:3]}, "
            f"unknown {result.unexpected_keys[:3]}"
        )
    vae.encoder.requires_grad_(False)
