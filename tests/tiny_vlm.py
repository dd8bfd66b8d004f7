"""Tiny random Qwen2.5-VL checkpoints for tests: no hub, no download, a few hundred kB.

The folder written by :func:`build_tiny_qwen25vl` has the layout of the real
``Qwen/Qwen2.5-VL-3B-Instruct`` repository (``config.json``, ``generation_config.json``,
safetensors weights, ``tokenizer.json`` + ``tokenizer_config.json``,
``preprocessor_config.json`` naming ``Qwen2VLImageProcessor`` and ``Qwen2_5_VLProcessor``,
``chat_template.json``), so loading it exercises the same code path as the real model:
architecture, special tokens and chat template are Qwen's, only the sizes and the
vocabulary are tiny. The tokenizer is a byte-level BPE trained here on a few sentences,
with Qwen's pre-tokenizer and special tokens in Qwen's order.

Reusable beyond the prompter tests: the alignment (GRPO) tests build policy and critic
models with the same helpers (``build_tiny_qwen25vl(folder, seed=...)``) and adapters
with :func:`save_lora_adapter`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: Qwen2.5-VL's special tokens, in the order of their ids in the real vocabulary (151643…).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

#: The chat template shipped with Qwen/Qwen2.5-VL-*-Instruct (chat_template.json).
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen2.5-VL-3B-Instruct's preprocessor_config.json, as published.
QWEN25VL_PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}

_CORPUS = [
    "a cat sitting on a wooden table next to a window",
    "fur, whiskers, eyes, nose, texture, detail, close-up",
    "The second image is a zoom-in of the first image.",
    "Based on this knowledge, what is in the second image? Give me a set of words.",
    "grass, sky, clouds, tree, leaves, bark, brick wall, stone, water, sand",
    "You are a helpful assistant. 0123456789 !?.,;:'\"()[]{}<>-_/\\|",
]


def train_tokenizer(vocab_size: int = 400):
    """A Qwen2 tokenizer whose BPE vocabulary is trained on a handful of sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=QWEN_SPECIAL_TOKENS,
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token="<|im_end|>", errors="replace")
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN25VL_CHAT_TEMPLATE
    return tokenizer


def tiny_qwen25vl_config(tokenizer, hidden: int = 64, layers: int = 2):
    """A Qwen2.5-VL config with tiny sizes and the tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden // heads
    # mrope splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            # Wider than the default 0.02, so greedy answers vary with the images instead
            # of repeating one token: tests can then tell answers apart.
            "initializer_range": 0.3,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_qwen25vl(folder: str | Path, seed: int = 0) -> Path:
    """Write a random tiny Qwen2.5-VL checkpoint, laid out like the real one, to ``folder``."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    tokenizer = train_tokenizer()
    config = tiny_qwen25vl_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # The real generation_config.json (sampling with top_k=1, i.e. effectively greedy).
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        do_sample=True,
        repetition_penalty=1.05,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(QWEN25VL_PREPROCESSOR_CONFIG, indent=2))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25VL_CHAT_TEMPLATE}))
    return folder


#: adapter_config.json of the official GRPO-aligned prompt adapter (checkpoint-10000).
OFFICIAL_ADAPTER_CONFIG = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "bias": "none",
    "init_lora_weights": True,
    "use_dora": False,
    "use_rslora": False,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "target_modules": r"^(model).*\.(q_proj|o_proj|gate_proj|down_proj|k_proj|up_proj|v_proj)$",
    "base_model_name_or_path": "/root/.cache/modelscope/hub/models/Qwen/Qwen2___5-VL-3B-Instruct",
}

_LM_PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def save_lora_adapter(
    model_folder: str | Path, folder: str | Path, *, legacy_names: bool = True, seed: int = 0, std: float = 0.05
) -> dict[str, torch.Tensor]:
    """Write a LoRA adapter with nonzero random A and B in the official adapter's format.

    ``legacy_names`` names modules as transformers 4.49 did (``model.layers.N...``), which
    is how the official checkpoint-10000 stores them; otherwise as transformers 5 does
    (``model.language_model.layers.N...``). Returns the saved tensors.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(model_folder).text_config
    head_dim = text.hidden_size // text.num_attention_heads
    shapes = {  # (out_features, in_features)
        "self_attn.q_proj": (text.num_attention_heads * head_dim, text.hidden_size),
        "self_attn.k_proj": (text.num_key_value_heads * head_dim, text.hidden_size),
        "self_attn.v_proj": (text.num_key_value_heads * head_dim, text.hidden_size),
        "self_attn.o_proj": (text.hidden_size, text.num_attention_heads * head_dim),
        "mlp.gate_proj": (text.intermediate_size, text.hidden_size),
        "mlp.up_proj": (text.intermediate_size, text.hidden_size),
        "mlp.down_proj": (text.hidden_size, text.intermediate_size),
    }
    stem = "model.layers" if legacy_names else "model.language_model.layers"
    rank = OFFICIAL_ADAPTER_CONFIG["r"]
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(text.num_hidden_layers):
        for projection in _LM_PROJECTIONS:
            out_features, in_features = shapes[projection]
            key = f"base_model.model.{stem}.{layer}.{projection}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * std
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * std
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(OFFICIAL_ADAPTER_CONFIG, indent=2))
    return tensors
