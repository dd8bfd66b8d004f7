"""Full-image mode: peak memory and throughput as the output grows.

Each case runs in its own process, so its peak RSS (``wait4``) is that case's
alone: a 4x and a 16x full-image run of the bundled photo resized to three sizes,
with the bicubic backbone (cheap, so the cost of tiling, blending and pyramid
writing shows) and one small Real-ESRGAN case. Throughput is output megapixels
(all levels made) per second of the whole run, next to the backbone's own rate on
one tile of the same size in the same process, so the overhead of streaming is
the gap between the two.

    PYTHONPATH=src python bench/fullimage.py [--format tiff] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"
#: (backbone, input long side, levels, tile, overlap): bicubic for size scaling, one real model case.
CASES = [
    ("bicubic", 256, 1, 512, 112),
    ("bicubic", 512, 1, 512, 112),
    ("bicubic", 1024, 1, 512, 112),
    ("bicubic", 256, 2, 512, 112),
    ("bicubic", 512, 2, 512, 112),
    ("bicubic", 1024, 2, 512, 112),
    ("bicubic", 1732, 2, 512, 112),  # a 2 MP photo at 16x: 512 MP
    ("realesrgan", 208, 1, 160, 112),
]


def run_case(backbone_name: str, side: int, levels: int, tile: int, overlap: int, fmt: str) -> dict:
    """One full-image run in this process; returns sizes and timings (not memory: the parent measures it)."""
    import torch
    from PIL import Image

    from chainzoom.backbones import create_backbone
    from chainzoom.io.images import from_pil
    from chainzoom.runs.full import zoom_full
    from chainzoom.runtime import Runtime

    photo = Image.open(SAMPLE).convert("RGB")
    width, height = photo.size
    photo = photo.resize((side, round(side * height / width)), Image.Resampling.LANCZOS)
    image = from_pil(photo)
    backbone = create_backbone(backbone_name, Runtime(device="cpu"))
    probe = torch.rand(3, min(tile, image.size[1]), min(tile, image.size[0]))
    backbone.upscale(probe)  # warm-up (first-call allocations)
    started = time.perf_counter()
    backbone.upscale(probe)
    tile_seconds = time.perf_counter() - started
    tile_mp = probe.shape[1] * probe.shape[2] * backbone.scale**2 / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-full-") as out:
        started = time.perf_counter()
        manifest = zoom_full(
            image, Path(out), backbone, None, levels=levels, fmt=fmt, tile=tile, overlap=overlap, request={}
        )
        seconds = time.perf_counter() - started
    made = manifest["levels"][1:]
    output_mp = sum(level["size"][0] * level["size"][1] for level in made) / 1e6
    return {
        "backbone": backbone_name,
        "input": list(image.size),
        "scale": backbone.scale**levels,
        "output": made[-1]["size"],
        "output_mp": round(output_mp, 2),
        "tiles": sum(level["tiles"] for level in made),
        "seconds": round(seconds, 2),
        "backbone_seconds": round(sum(level["backbone_seconds"] for level in made), 2),
        "mp_per_s": round(output_mp / seconds, 3),
        "backbone_tile_mp_per_s": round(tile_mp / tile_seconds, 3),
        "tile": tile,
        "overlap": overlap,
        "format": fmt,
    }


def measure(case: tuple, fmt: str) -> dict:
    """Run ``case`` in a child process and add its peak resident memory."""
    command = [sys.executable, __file__, "--one", json.dumps(case), "--format", fmt]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.stdout.close()
    if status != 0:
        raise SystemExit(f"case {case} failed with status {status}")
    result = json.loads(output)
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024)  # Linux reports KiB
    return result


def table(results: list[dict]) -> str:
    lines = [
        "| backbone | input | scale | output | output MP | tiles | s | MP/s | backbone tile MP/s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {r['input'][0]}x{r['input'][1]} | x{r['scale']} | "
            f"{r['output'][0]}x{r['output'][1]} | {r['output_mp']} | {r['tiles']} | {r['seconds']} | "
            f"{r['mp_per_s']} | {r['backbone_tile_mp_per_s']} | {r['peak_rss_mib']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="tiff", choices=("tiff", "dzi", "png"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--skip-model", action="store_true", help="bicubic cases only")
    parser.add_argument("--case", type=int, action="append", help="run only these cases (0-based, repeatable)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_case(*json.loads(args.one), args.format)))
        return
    results = []
    for number, case in enumerate(CASES):
        if (args.skip_model and case[0] != "bicubic") or (args.case and number not in args.case):
            continue
        results.append(measure(case, args.format))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
