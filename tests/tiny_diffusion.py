"""Tiny random SD3 and SD 2.1 stacks in the diffusers folder layout, and adapter files
written in the official OSEDiff / Chain-of-Zoom formats. Reusable by any test.

Nothing is downloaded: every model is built from a small config with seeded random
weights, and the tokenizers are built locally from a character vocabulary. The
adapters are made the way the official training code makes them (PEFT ``add_adapter``
with the official target rules, then the official save format), so the loaders are
tested against PEFT's own key names. Each ``write_*`` function also returns the
PEFT-wrapped reference model, whose unmerged forward the merged backbone must match.

The sizes mirror the real models where the loaders depend on them: an 8x VAE (four
blocks), 16 latent channels and patch 2 for SD3, a 4-channel VAE with ``quant_conv``
for SD 2.1, a CLIP width smaller than T5's (the official encoding pads it), and SD3
blocks whose last context norm is not an ``AdaLayerNormZero``.
"""

from __future__ import annotations

import string
import warnings
from pathlib import Path

import torch

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512
_CHARS = string.ascii_lowercase + string.digits + ",.-'"
#: The official VAE-encoder LoRA target patterns (OSEDiff and Chain-of-Zoom alike).
VAE_LORA_PATTERNS = (
    "conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0",
)  # fmt: skip
#: The official SD 2.1 UNet LoRA target patterns.
UNET_LORA_PATTERNS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
    "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip
LORA_RANK = 4


def clip_tokenizer():
    """A byte-level BPE CLIP tokenizer over single characters (no merges)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in _CHARS:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def t5_tokenizer():
    """A unigram T5 tokenizer over single characters, special ids as in T5 (pad 0, eos 1)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(char, -3.0) for char in _CHARS] + [("▁" + char, -2.5) for char in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _vae(latent_channels: int, sd3: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=1.5305 if sd3 else 0.18215,
        shift_factor=0.0609 if sd3 else None,
        use_quant_conv=not sd3,
        use_post_quant_conv=not sd3,
    )


def _clip_text_model(hidden: int, with_projection: bool, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def build_sd3(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random SD3 (2 blocks, 16-channel 8x VAE, CLIP-L/G and T5) at ``folder``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_3 = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=16,
        pos_embed_max_size=32,
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_3),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    ).eval()
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, sd3=True),
        text_encoder=_clip_text_model(8, True, len(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=_clip_text_model(16, True, len(tokenizer)),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5,
        tokenizer_3=tokenizer_3,
    )
    pipeline.save_pretrained(folder)
    return folder


def build_sd21(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random SD 2.1-style model (epsilon UNet, 4-channel 8x VAE, CLIP) at ``folder``."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=(2, 4),
        norm_num_groups=4,
        use_linear_projection=True,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=_vae(4, sd3=False),
        text_encoder=_clip_text_model(16, False, len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def vae_encoder_lora_targets(vae: torch.nn.Module) -> list[str]:
    """The official rule: weights of encoder layers matching a pattern, plus ``quant_conv``."""
    targets = []
    for name, _ in vae.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        in_encoder = "encoder" in name and any(pattern in name for pattern in VAE_LORA_PATTERNS)
        if in_encoder or ("quant_conv" in name and "post_quant_conv" not in name):
            targets.append(name.removesuffix(".weight"))
    return sorted(set(targets))


def randomize_loras(model: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """PEFT's gaussian init leaves ``lora_B`` at zero (a no-op adapter); make every LoRA weight matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def write_sd3_transformer_lora(base: Path, path: Path, seed: int = 1, std: float = 0.1):
    """Write ``model_*.pkl``: ``[up_0, down_0, ...]`` fp32 for every AdaLayerNormZero linear.

    Returns the list of ``(linear name, up, down)`` so a test can check the merge.
    """
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(base, subfolder="transformer")
    generator = torch.Generator().manual_seed(seed)
    pairs, tensors = [], []
    for name, module in transformer.named_modules():
        if type(module).__name__ != "AdaLayerNormZero":
            continue
        linear = module.linear
        up = torch.randn(linear.out_features, LORA_RANK, generator=generator) * std
        down = torch.randn(LORA_RANK, linear.in_features, generator=generator) / LORA_RANK
        pairs.append((f"{name}.linear", up, down))
        tensors += [up, down]
    torch.save(tensors, path)
    return pairs


def write_sd3_vae_encoder(base: Path, path: Path, seed: int = 2):
    """Write ``vae_encoder_*.pt`` (the PEFT-wrapped encoder's whole state dict in fp16).

    Returns the PEFT-wrapped VAE (its weights rounded to fp16 like the file) as reference.
    """
    from diffusers import AutoencoderKL
    from peft import LoraConfig

    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    config = LoraConfig(r=LORA_RANK, init_lora_weights="gaussian", target_modules=vae_encoder_lora_targets(vae))
    vae.add_adapter(config, adapter_name="default_encoder")
    randomize_loras(vae, seed)
    state = {key: value.half() for key, value in vae.encoder.state_dict().items()}
    torch.save(state, path)
    vae.encoder.load_state_dict(state)
    return vae.eval()


def write_osediff_checkpoint(base: Path, path: Path, seed: int = 3):
    """Write ``osediff.pkl`` as OSEDiff's training script saves it.

    Returns the PEFT-wrapped ``(unet, vae)`` with all adapters active, as reference.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    groups = _unet_lora_groups(unet)
    with warnings.catch_warnings():  # PEFT warns that a second adapter is added: that is the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        for adapter, targets in groups.items():
            config = LoraConfig(r=LORA_RANK, init_lora_weights="gaussian", target_modules=targets)
            unet.add_adapter(config, adapter_name=adapter)
    unet.set_adapter(list(groups))
    vae_targets = vae_encoder_lora_targets(vae)
    vae.add_adapter(
        LoraConfig(r=LORA_RANK, init_lora_weights="gaussian", target_modules=vae_targets),
        adapter_name="default_encoder",
    )
    randomize_loras(unet, seed)
    randomize_loras(vae, seed + 1)
    generator = torch.Generator().manual_seed(seed + 2)
    conv_in = unet.conv_in.base_layer.weight
    with torch.no_grad():  # OSEDiff trains conv_in fully
        conv_in.add_(torch.randn(conv_in.shape, generator=generator) * 0.1)
    checkpoint = {
        "vae_lora_encoder_modules": vae_targets,
        "unet_lora_encoder_modules": groups["default_encoder"],
        "unet_lora_decoder_modules": groups["default_decoder"],
        "unet_lora_others_modules": groups["default_others"],
        "rank_unet": LORA_RANK,
        "rank_vae": LORA_RANK,
        "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
        "state_dict_vae": {k: v for k, v in vae.state_dict().items() if "lora" in k or "skip" in k},
    }
    torch.save(checkpoint, path)
    return unet.eval(), vae.eval()


def _unet_lora_groups(unet: torch.nn.Module) -> dict[str, list[str]]:
    """The official split of UNet LoRA targets into encoder, decoder and other adapters."""
    groups: dict[str, list[str]] = {"default_encoder": [], "default_decoder": [], "default_others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        if not any(pattern in name for pattern in UNET_LORA_PATTERNS):
            continue
        module = name.removesuffix(".weight")
        if "down_blocks" in name or "conv_in" in name:
            groups["default_encoder"].append(module)
        elif "up_blocks" in name or "conv_out" in name:
            groups["default_decoder"].append(module)
        else:
            groups["default_others"].append(module)
    return groups
