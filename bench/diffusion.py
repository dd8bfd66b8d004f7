"""Benchmark: one OSEDiff-SD3 4x step (128² view -> 512²) on the real SD3-medium architecture.

The models are built from the SD3-medium configs with **random weights** (nothing can be
downloaded here): sizes, shapes and therefore time and memory are those of the real
model, the pixels are not. The step runs through :class:`OSEDiffSD3`, our real code path.

``--text none`` (the default) times the SR step proper (VAE encode, one transformer
step, VAE decode) from text embeddings of the official shape (589 x 4096 and 2048),
without building the 5.5 B parameters of CLIP-L, CLIP-G and T5-XXL. ``--text real``
builds them too (random weights, locally built character tokenizers: the official
encoding pads to fixed lengths, so the cost is the real one) and times whole
``upscale`` calls; ``--efficient`` then measures the official 24 GB mode.
``--layers N`` builds N of the 24 transformer blocks, for machines without the 10 GiB a
float32 CPU run needs, and extrapolates the transformer time linearly to 24 (the blocks
are identical); the report says when it did. Treat that as a rough lower bound: on the
shared 2-core development machine one block extrapolated to 22 s, while the full 24 blocks
took 48 s (docs/diffusion.md records the full run).

Run from the repository root::

    PYTHONPATH=src python bench/diffusion.py --device cpu --layers 4
    PYTHONPATH=src python bench/diffusion.py --device cuda --dtype float16 --text real --efficient
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.tiny_diffusion's locally built tokenizers

from chainzoom.backbones.diffusion.common import OneStepOptions, Opened  # noqa: E402
from chainzoom.backbones.diffusion.sd3 import CLIP_TOKENS, T5_TOKENS, OSEDiffSD3, SD3Parts  # noqa: E402
from chainzoom.runtime import Runtime  # noqa: E402

#: stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)
#: its vae/config.json
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
#: text_encoder (CLIP-L), text_encoder_2 (OpenCLIP bigG) and text_encoder_3 (T5 v1.1 XXL)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, hidden_act="gelu")  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu")  # fmt: skip
VIEW = 128
PROMPT = "a red brick wall with moss, detailed texture"


def build_parts(layers: int, text: bool, device: torch.device, dtype: torch.dtype) -> SD3Parts:
    """Random-weight SD3-medium parts, built directly on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from tests.tiny_diffusion import clip_tokenizer, t5_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(0)
    with device:
        transformer = SD3Transformer2DModel(**{**TRANSFORMER, "num_layers": layers}).to(dtype)
        vae = AutoencoderKL(**VAE).to(dtype)
        if text:
            encoders = (
                CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L, max_position_embeddings=CLIP_TOKENS)),
                CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G, max_position_embeddings=CLIP_TOKENS)),
                T5EncoderModel(T5Config(**T5_XXL)),
            )
            encoders = tuple(encoder.to(dtype) for encoder in encoders)
            tokenizers = (clip_tokenizer(), clip_tokenizer(), t5_tokenizer())
        else:  # not run: the step starts from embeddings of the official shape
            encoders, tokenizers = (nn.Identity(), nn.Identity(), nn.Identity()), (None, None, None)
    for module in (transformer, vae, *encoders):
        module.eval().requires_grad_(False)
    return SD3Parts(transformer=transformer, vae=vae, tokenizers=tokenizers, text_encoders=encoders)


def official_shape_condition(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    sequence = torch.randn(1, CLIP_TOKENS + T5_TOKENS, 4096, generator=generator)
    pooled = torch.randn(1, 2048, generator=generator)
    return sequence.to(device, dtype), pooled.to(device, dtype)


class PeakMemory:
    """Peak device memory (CUDA allocator) or peak process RSS (CPU, sampled every 5 ms)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def sr_phases(backbone: OSEDiffSD3, view: torch.Tensor, condition: tuple) -> dict[str, float]:
    """Seconds of VAE encode, the transformer step and VAE decode (the "sr" group resident)."""
    from chainzoom.core.resample import resize

    device = backbone.device
    pixels = resize(view, (VIEW * 4, VIEW * 4), "bicubic")
    times = {}
    with torch.inference_mode(), backbone.residency.use("sr"):
        box: dict[str, torch.Tensor] = {}
        times["vae_encode"] = timed(device, lambda: box.update(z=backbone._encode_image(pixels)))
        times["transformer"] = timed(device, lambda: box.update(z=backbone._denoise(box["z"], condition)))
        times["vae_decode"] = timed(device, lambda: backbone._decode_latent(box["z"]))
    return times


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    runtime = Runtime(device=args.device, dtype=args.dtype)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    started = time.perf_counter()
    parts = build_parts(args.layers, args.text == "real", device, dtype)
    if args.efficient:  # the factory loads on the CPU; efficient mode then moves parts per use
        for module in parts.modules():
            module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    build_seconds = time.perf_counter() - started
    options = OneStepOptions(efficient_memory=args.efficient, latent="sample")
    backbone = OSEDiffSD3(parts, Opened("random weights (SD3-medium configs)", {}, options, device, dtype), runtime)
    view = torch.rand(3, VIEW, VIEW, generator=torch.Generator().manual_seed(2))
    parameters = {
        "transformer": sum(p.numel() for p in parts.transformer.parameters()),
        "vae": sum(p.numel() for p in parts.vae.parameters()),
        "text_encoders": sum(p.numel() for m in parts.text_encoders for p in m.parameters()),
    }
    result = {
        "machine": machine(device),
        "device": args.device,
        "dtype": args.dtype,
        "layers_built": args.layers,
        "text": args.text,
        "efficient_memory": args.efficient,
        "parameters": parameters,
        "build_seconds": round(build_seconds, 1),
    }
    if args.text == "real":
        backbone.upscale(view, PROMPT)  # warm-up
        samples, peaks = [], []
        for _ in range(args.repeat):
            with PeakMemory(device) as peak:
                samples.append(timed(device, lambda: backbone.upscale(view, PROMPT)))
            peaks.append(peak.peak)
        result["step_seconds"] = statistics.median(samples)
        result["step_peak_bytes"] = max(peaks)
        with torch.inference_mode(), backbone.residency.use("text"):
            result["text_seconds"] = timed(device, lambda: backbone._encode_prompt(PROMPT))
        if device.type == "cuda":
            result["resident_between_steps_bytes"] = torch.cuda.memory_allocated()
    condition = official_shape_condition(device, dtype)
    sr_phases(backbone, view, condition)  # warm-up
    if device.type == "cpu":
        result["rss_before_sr_bytes"] = rss()
    with PeakMemory(device) as peak:
        phases = [sr_phases(backbone, view, condition) for _ in range(args.repeat)]
    result["sr_peak_bytes"] = peak.peak
    result["sr_seconds"] = {key: statistics.median(p[key] for p in phases) for key in phases[0]}
    if args.layers != TRANSFORMER["num_layers"]:
        measured = result["sr_seconds"]["transformer"]
        result["transformer_seconds_extrapolated_to_24_layers"] = measured * TRANSFORMER["num_layers"] / args.layers
    if args.check_efficient:
        normal = backbone.upscale(view, PROMPT)
        offloading = OneStepOptions(efficient_memory=True)
        efficient = OSEDiffSD3(parts, Opened("random weights", {}, offloading, device, dtype), runtime)
        offloaded = efficient.upscale(view, PROMPT)  # moves every part to the CPU after use
        result["efficient_vs_normal_max_abs_diff"] = float((normal - offloaded).abs().max())
    return result


def machine(device: torch.device) -> str:
    threads = torch.get_num_threads()
    cpu = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {threads} threads"
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), {cpu}"
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--layers", type=int, default=TRANSFORMER["num_layers"])
    parser.add_argument("--text", default="none", choices=("none", "real"))
    parser.add_argument("--efficient", action="store_true", help="--efficient-memory (official 24 GB mode)")
    parser.add_argument(
        "--check-efficient", action="store_true", help="with --text real: resident and offloaded outputs agree"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="append the result as one JSON line")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
