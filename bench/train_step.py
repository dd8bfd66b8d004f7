"""Benchmark: one OSEDiff-SD3 training step at the real SD3-medium sizes (random weights).

The transformer and the VAE are built from the SD3-medium configs (``bench/diffusion.py``)
with random weights, and LPIPS from a random VGG16 of the real widths: sizes, and so time
and memory, are those of a real run; the losses are not. Text embeddings of the official
shape (589 x 4096 and 2048) stand in for the text encoders, which a real run uses once per
caption (``--captions none``: once in all). The step is :meth:`OSEDiffSD3Trainer.step`, the
trainer's own code path (generator, LPIPS, VSD with the regulariser and the frozen base,
both optimizer updates).

For every batch size and gradient-checkpointing setting asked for it reports the median
seconds per step (after one warm-up step) and the peak memory (the CUDA allocator's peak
on a GPU, the process RSS on the CPU). Absolute seconds on a shared machine are noisy;
compare settings within one run.

    PYTHONPATH=src python bench/train_step.py --device cuda --dtype bfloat16 --batches 1,2,4
    PYTHONPATH=src python bench/train_step.py --device cpu --layers 1 --crop 64 --batches 1 --steps 1  # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from chainzoom.train.config import parse_loss
from chainzoom.train.lpips import LPIPS, VGG16Features
from chainzoom.train.osediff import OSEDiffSD3Trainer
from diffusion import PeakMemory, build_parts, machine, official_shape_condition  # bench/diffusion.py

VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_SLICE_WIDTHS = (64, 128, 256, 512, 512)


def random_lpips() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS(VGG16Features(VGG16_WIDTHS), [torch.rand(1, w, 1, 1) for w in LPIPS_SLICE_WIDTHS])


def measure(args: argparse.Namespace, checkpointing: bool) -> list[dict]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    weights = parse_loss(args.loss)
    parts = build_parts(args.layers, False, device, torch.float32)
    trainer = OSEDiffSD3Trainer(
        parts,
        FlowMatchEulerDiscreteScheduler(shift=3.0),
        weights,
        rank=4,
        lr=5e-5,
        device=device,
        dtype=dtype,
        seed=0,
        lpips=random_lpips() if weights["lpips"] > 0 else None,
        gradient_checkpointing=checkpointing,
    )
    trainer.prompts[""] = official_shape_condition(torch.device("cpu"), torch.float32)
    rows = []
    for batch in args.batches:
        generator = torch.Generator().manual_seed(batch)
        hr = torch.rand(batch, 3, args.crop, args.crop, generator=generator)
        lr_up = torch.rand(batch, 3, args.crop, args.crop, generator=generator)
        seconds = []
        with PeakMemory(device) as peak:
            for number in range(args.steps + 1):  # the first is a warm-up
                started = time.perf_counter()
                trainer.step(hr, lr_up, [""] * batch, np.random.default_rng([0, number]))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - started)
        rows.append(
            {
                "batch": batch,
                "gradient_checkpointing": checkpointing,
                "seconds_per_step": round(statistics.median(seconds[1:]), 3),
                "peak_memory_gib": round(peak.peak / 2**30, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    del trainer, parts
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--layers", type=int, default=24, help="transformer blocks built (SD3 medium: 24)")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2, 4])
    parser.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting, after one warm-up")
    parser.add_argument("--loss", default="mse=1,lpips=2,vsd=1")
    args = parser.parse_args()
    if args.device == "cpu" and args.dtype != "float32":
        parser.error("half precision is for GPUs")
    settings = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    rows = [row for checkpointing in settings for row in measure(args, checkpointing)]
    print(json.dumps({"machine": machine(torch.device(args.device)), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
