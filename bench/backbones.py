"""Benchmark: model x input size x runtime -> seconds, and the ratio to ncnn in the same run.

    python bench/backbones.py                          # CPU: torch (plain, channels-last) vs ncnn
    python bench/backbones.py --device cuda --dtype float16 --sizes 128,256,512

On the CPU every torch figure is divided by the ncnn runtime's time on the same input,
measured in the same run (absolute times on shared machines are noisy). On a GPU
there is no ncnn reference (the PyPI ncnn build is CPU-only here), so the ratio is to
torch float32 on the same GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from chainzoom.backbones.bundled.models import BUNDLED, rrdbnet_from_ncnn
from chainzoom.backbones.bundled.ncnn_runtime import NcnnModel
from chainzoom.io.images import load_image


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="comma list, e.g. float32,float16,bfloat16")
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--models", default="realesrgan,realsr")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (float32)")
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    photo = load_image("assets/photos/rocket.jpg").rgb
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    reference_name = "ncnn" if device.type == "cpu" else "torch float32"
    print(f"{'model':<11} {'size':>5} {'runtime':<26} {'seconds':>8} {'ratio to ' + reference_name:>20}")
    for model_id in args.models.split(","):
        files = BUNDLED[model_id].files()
        network = rrdbnet_from_ncnn(*files).eval()
        ncnn_model = NcnnModel(*files, threads=torch.get_num_threads()) if device.type == "cpu" else None
        for size in (int(s) for s in args.sizes.split(",")):
            crop = photo[:, :size, :size].contiguous()
            rows: list[tuple[str, float]] = []
            if ncnn_model is not None:
                rows.append(("ncnn", timed(partial(ncnn_model, crop), args.repeats, sync)))
            for dtype_name in args.dtype.split(","):
                dtype = getattr(torch, dtype_name)
                for channels_last in (False, True):
                    fmt = torch.channels_last if channels_last else torch.contiguous_format
                    model = network.to(device=device, dtype=dtype, memory_format=fmt)
                    batch = crop[None].to(device=device, dtype=dtype).contiguous(memory_format=fmt)
                    with torch.inference_mode():
                        seconds = timed(partial(model, batch), args.repeats, sync)
                    rows.append((f"torch {dtype_name}{' channels-last' if channels_last else ''}", seconds))
            if args.compile:
                model = network.to(device=device, dtype=torch.float32, memory_format=torch.channels_last)
                batch = crop[None].to(device=device).contiguous(memory_format=torch.channels_last)
                compiled = torch.compile(model)
                with torch.inference_mode():
                    started = time.perf_counter()
                    compiled(batch)
                    print(f"  (torch.compile for {size}x{size}: {time.perf_counter() - started:.1f} s once)")
                    rows.append(("torch compile channels-last", timed(partial(compiled, batch), args.repeats, sync)))
            reference = rows[0][1]
            for name, seconds in rows:
                print(f"{model_id:<11} {size:>5} {name:<26} {seconds:8.3f} {seconds / reference:20.2f}")


if __name__ == "__main__":
    main()
