"""Benchmark: one 4x step of each bundled model per engine and precision, against the machine's own GEMM.

Run: ``make bench`` (or ``python bench/step.py``). For each model and input side it prints the
seconds of one step (median of interleaved repeats), the ratio to ncnn (the other runtime
here), the achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode) and their share of a
GEMM of the same precision measured in the same run (the practical peak). Then the x256 chain
written to a run folder against the bare compute. The CPU model and its bf16 flags are printed,
since the best precision differs between machines (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from chainzoom.api import ChainZoom
from chainzoom.backbones import BACKBONES
from chainzoom.backbones.bundled.models import BUNDLED
from chainzoom.backbones.bundled.ncnn_runtime import NcnnModel
from chainzoom.io.images import load_image
from chainzoom.pipeline.chain import zoom_chain
from chainzoom.runs import driver
from chainzoom.runtime import NATIVE_BF16_FLAGS, Runtime, cpu_flags


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    flags = cpu_flags()
    bf16 = [f for f in NATIVE_BF16_FLAGS if f in flags]
    avx512 = "avx512f" in flags
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, AVX-512: {'yes' if avx512 else 'no'}, "
        f"native bf16: {', '.join(bf16) or 'none'}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant, one call of each in turn per round (after a warm-up round)."""
    for call in variants.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, call in variants.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return times


def gemm_rate(dtype: torch.dtype, side: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``side``-square matrix product in ``dtype`` (the practical peak of this machine)."""
    a, b = torch.rand(side, side).to(dtype), torch.rand(side, side).to(dtype)
    torch.mm(a, b)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        samples.append(time.perf_counter() - started)
    return 2 * side**3 / statistics.median(samples) / 1e9


def step_flops(model: torch.nn.Module, side: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.rand(1, 3, side, side))
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="128,256", help="input sides of the step (output is 4x)")
    parser.add_argument("--models", default="realesrgan,realsr")
    parser.add_argument("--no-chain", action="store_true", help="skip the x256 written-run measurement")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    peaks = {"float32": gemm_rate(torch.float32), "bfloat16": gemm_rate(torch.bfloat16)}
    print("GEMM 2048^2: " + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in peaks.items()))
    photo = load_image("assets/photos/coffee.png")
    header = f"{'model':<11} {'side':>4} {'engine':<15} {'seconds':>8} {'spread':>7} {'vs ncnn':>8} {'GFLOP/s':>8} {'of GEMM':>8}"
    print(header)
    for model_id in args.models.split(","):
        engines: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        torch_models = {}
        for dtype in ("float32", "bfloat16"):
            backbone = BACKBONES.create(model_id, Runtime(device="cpu", dtype=dtype, allow_slow_dtype=True))
            engines[f"torch {dtype}"] = backbone.upscale
            torch_models[dtype] = backbone.model  # type: ignore[attr-defined]
        ncnn = NcnnModel(*BUNDLED[model_id].files(), threads=torch.get_num_threads())
        engines["ncnn"] = ncnn
        for side in (int(s) for s in args.sizes.split(",")):
            crop = photo.rgb[:, :side, :side].contiguous()
            flops = step_flops(torch_models["float32"].float(), side)
            times = interleaved({name: partial(f, crop) for name, f in engines.items()}, args.repeats)
            ncnn_s = statistics.median(times["ncnn"])
            for name, samples in times.items():
                median = statistics.median(samples)
                spread = (max(samples) - min(samples)) / median
                rate = flops / median / 1e9
                peak = peaks.get(name.split()[-1], peaks["float32"])
                print(
                    f"{model_id:<11} {side:>4} {name:<15} {median:8.3f} {100 * spread:6.1f}% "
                    f"{median / ncnn_s:8.2f} {rate:8.0f} {100 * rate / peak:7.0f}%"
                )
    if not args.no_chain:
        written_run("assets/sample.jpg", args.repeats)


def written_run(path: str, repeats: int) -> None:
    """The x256 chain written to a run folder (PNGs, manifest, strip, WebP) against its bare compute,
    interleaved, with the precision ``auto`` picks here."""
    cz = ChainZoom("realesrgan", runtime=Runtime(device="cpu"))
    config = cz.job(path, scale=256.0)
    zoom = driver.prepare(cz.models, path, config)
    backbone = cz.models.backbone_for(zoom.job.config)

    def compute() -> None:
        list(zoom_chain(zoom.image, zoom.plan, backbone))

    def written() -> None:
        with tempfile.TemporaryDirectory() as folder:
            list(driver.zoom_states(cz.models, driver.prepare(cz.models, path, config), Path(folder)))

    times = interleaved({"compute only": compute, "written run": written}, repeats)
    base = statistics.median(times["compute only"])
    print(
        f"x256 chain of {path} ({zoom.plan.view[0]}x{zoom.plan.view[1]}, {zoom.job.runtime.dtype}), median of {repeats}:"
    )
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = (max(samples) - min(samples)) / median
        print(
            f"  {name:<14} {median:7.2f} s (spread {100 * spread:.0f} %)  {100 * (median / base - 1):+6.1f} % over the compute"
        )


if __name__ == "__main__":
    main()
