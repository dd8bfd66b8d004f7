"""Benchmark: one 4x step of the embedded model, torch vs the ncnn runtime, and chain overhead.

Run: ``make bench`` (or ``python bench/step.py``). Prints a table and the machine.
Absolute times on shared machines are noisy, so every figure comes with a ratio to
a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from functools import partial, partialmethod
from pathlib import Path

import torch

from chainzoom.api import ChainZoom
from chainzoom.backbones import create_backbone
from chainzoom.backbones.bundled.models import BUNDLED
from chainzoom.backbones.bundled.ncnn_runtime import NcnnModel
from chainzoom.io.images import load_image
from chainzoom.pipeline.chain import zoom_chain
from chainzoom.runs.animation import AnimationWriter
from chainzoom.runtime import Runtime


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input side of the step (output is 4x)")
    args = parser.parse_args()

    photo = load_image("assets/photos/coffee.png")
    crop = photo.rgb[:, : args.size, : args.size].contiguous()
    print(f"machine: {machine()}")
    print(f"one 4x step {args.size}->{args.size * 4}, median of {args.repeats}:")
    print(f"{'model':<12} {'torch s':>9} {'ncnn s':>9} {'torch/ncnn':>11}")
    for model_id in ("realesrgan", "realsr"):
        backbone = create_backbone(model_id)
        ncnn_model = NcnnModel(*BUNDLED[model_id].files(), threads=torch.get_num_threads())
        t_torch = timed(partial(backbone.upscale, crop), args.repeats)
        t_ncnn = timed(partial(ncnn_model, crop), args.repeats)
        print(f"{model_id:<12} {t_torch:9.3f} {t_ncnn:9.3f} {t_torch / t_ncnn:11.2f}")

    pipeline = ChainZoom("realesrgan", runtime=Runtime(device="cpu")).load()
    path = "assets/photos/astronaut.png"
    config = pipeline.job(path, scale=256.0)
    image, plan = pipeline.prepare(path, config)
    started = time.perf_counter()
    states = list(zoom_chain(image, plan, pipeline.backbone))
    wall = time.perf_counter() - started
    in_backbone = sum(s.seconds.get("backbone", 0.0) for s in states)
    overhead = wall - in_backbone
    print(
        f"chain x256 on {plan.view[0]}x{plan.view[1]} (4 steps): wall {wall:.2f} s, "
        f"backbone {in_backbone:.2f} s, overhead {overhead:.3f} s = {100 * overhead / wall:.1f}%"
    )

    written_run(pipeline, "assets/sample.jpg", args.repeats)


def written_run(pipeline: ChainZoom, path: str, repeats: int) -> None:
    """A written run's wall time against the bare chain's, variants interleaved (median of ``repeats``)."""
    config = pipeline.job(path, scale=256.0)
    image, plan = pipeline.prepare(path, config)
    list(zoom_chain(image, plan, pipeline.backbone))  # warm-up
    variants = {
        "written, animation on a thread (default)": (config, True),
        "written, animation inline": (config, False),
        "written, --no-animation": (dataclasses.replace(config, animation=False), True),
    }
    times: dict[str, list[float]] = {"compute only": [], **{name: [] for name in variants}}
    real_init = AnimationWriter.__init__
    for _ in range(repeats):
        started = time.perf_counter()
        list(zoom_chain(image, plan, pipeline.backbone))
        times["compute only"].append(time.perf_counter() - started)
        for name, (variant, background) in variants.items():
            AnimationWriter.__init__ = partialmethod(real_init, background=background)  # type: ignore[method-assign]
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                pipeline.run(path, image, plan, variant, out=Path(folder))
                times[name].append(time.perf_counter() - started)
    AnimationWriter.__init__ = real_init  # type: ignore[method-assign]
    compute = statistics.median(times["compute only"])
    print(f"x256 chain of {path} ({plan.view[0]}x{plan.view[1]}), median of {repeats}:")
    for name, samples in times.items():
        wall = statistics.median(samples)
        print(f"  {name:<42} {wall:7.2f} s  {100 * (wall / compute - 1):+6.1f} % over the compute")


if __name__ == "__main__":
    main()
