"""The Ray executor against the local one: tiles per second and the cost Ray adds per tile.

One level of full-image tiles (:func:`chainzoom.runs.full.make_tiles`, the driver reading
every input and caching every result as a real run does) is made three ways in the
same process: by the local executor, and by the Ray executor with 1 and with 2
workers on a Ray head this script starts on 127.0.0.1 (or joins with ``--address``).
Actor start-up (each loads the model once) is timed apart and left out of the rates.
Two backbones: bicubic, so nearly all of a tile's time is overhead, and the bundled
Real-ESRGAN on small tiles, a real model's work. Results are ratios to the local
executor in the same run, since this machine is shared: the local executor as it runs
(torch's default threads) and with one torch thread, as each CPU actor of a 2-worker run has.

    PYTHONPATH=src python bench/ray.py [--address HOST:PORT] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named ray.py: keep its folder off the path, so `import ray` finds Ray.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"
#: (backbone, input side, tile, overlap, rounds): bicubic, 121 tiles of 32 px; Real-ESRGAN, 9 tiles of 32 px.
CASES = [("bicubic", 256, 32, 8, 5), ("realesrgan", 72, 32, 8, 3)]


def start_head() -> tuple[str, subprocess.Popen, Path]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="czbench-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
    env["RAY_AUTH_MODE"] = "disabled"  # as in tests/runs/test_ray.py: a private, short-lived head
    ray = Path(sys.executable).parent / "ray"
    command = [str(ray), "start", "--head", "--num-cpus", str(os.cpu_count() or 2), "--node-ip-address", "127.0.0.1"]
    command += ["--port", str(port), "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)]
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    head.wait(timeout=120)
    return f"127.0.0.1:{port}", head, temp


def stop_head(head: subprocess.Popen, temp: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(2)
    shutil.rmtree(temp, ignore_errors=True)


def source_level(folder: Path, side: int):
    from PIL import Image

    from chainzoom.io.images import from_pil, to_samples
    from chainzoom.runs.pyramid import RawLevel

    image = from_pil(Image.open(SAMPLE).convert("RGB").resize((side, side)))
    level = RawLevel(folder / "source.tif", side, side)
    level.create()
    level.write(0, 0, to_samples(image.rgb))
    return level


def timed_tiles(executor, level, folder: Path, tile: int, overlap: int) -> tuple[int, float, float]:
    """Tiles made, wall seconds, and the seconds the backbone itself took (summed over the workers)."""
    from chainzoom.runs.full import make_tiles, plan_axis

    cache = folder / f"cache-{time.monotonic_ns()}"
    xs = plan_axis(level.width, tile, overlap, 4)
    ys = plan_axis(level.height, tile, overlap, 4)
    started = time.perf_counter()
    stats = make_tiles(level, cache, xs, ys, None, None, 1, None, executor)
    seconds = time.perf_counter() - started
    shutil.rmtree(cache)
    return stats["tiles"], seconds, stats["backbone_seconds"]


def run(address: str) -> list[dict]:
    """Per case and worker count: rounds that time the local executor and then Ray, back to back.

    Rates are medians over the rounds; ``rayN_vs_local`` is the ratio of the median rates of
    the rounds made while that Ray executor was up (the machine's load moves between rounds).
    """
    import torch

    from chainzoom import ChainZoom
    from chainzoom.runs.executors import LocalExecutor
    from chainzoom.runs.ray_executor import RayExecutor
    from chainzoom.runtime import Runtime

    results = []
    for backbone, side, tile, overlap, rounds in CASES:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            level = source_level(folder, side)
            local = LocalExecutor(ChainZoom(backbone, "null", runtime=Runtime(device="cpu")).backbone, None)
            timed_tiles(local, level, folder, tile, overlap)  # warm-up: first calls allocate
            row: dict = {"backbone": backbone, "tile": tile, "rounds": rounds}
            for workers in (1, 2):
                started = time.perf_counter()
                models = ChainZoom(backbone, "null", runtime=Runtime(device="cpu"))
                with RayExecutor(models, address, workers, "cpu", False) as ray:
                    row[f"ray{workers}_startup_s"] = time.perf_counter() - started
                    timed_tiles(ray, level, folder, tile, overlap)  # warm-up
                    local_rate, single_rate, ray_rate, local_extra, ray_extra = [], [], [], [], []
                    for _ in range(rounds):
                        tiles, local_s, local_backbone = timed_tiles(local, level, folder, tile, overlap)
                        _, ray_s, ray_backbone = timed_tiles(ray, level, folder, tile, overlap)
                        threads = torch.get_num_threads()
                        torch.set_num_threads(1)  # the local executor as one CPU worker actor runs
                        _, single_s, _ = timed_tiles(local, level, folder, tile, overlap)
                        torch.set_num_threads(threads)
                        single_rate.append(tiles / single_s)
                        local_rate.append(tiles / local_s)
                        ray_rate.append(tiles / ray_s)
                        local_extra.append(1000 * (local_s - local_backbone) / tiles)
                        ray_extra.append(1000 * (ray_s - ray_backbone / workers) / tiles)
                row["tiles"] = tiles
                local_median = statistics.median(local_rate)
                row[f"local_tiles_per_s_with_ray{workers}"] = local_median
                row[f"ray{workers}_tiles_per_s"] = statistics.median(ray_rate)
                row[f"ray{workers}_vs_local"] = statistics.median(ray_rate) / local_median
                row[f"local_1_thread_tiles_per_s_with_ray{workers}"] = statistics.median(single_rate)
                row[f"ray{workers}_vs_local_1_thread"] = statistics.median(ray_rate) / statistics.median(single_rate)
                if workers == 1:
                    # What a tile costs beyond the backbone: reading, caching, and for Ray the trip.
                    row["local_overhead_ms_per_tile"] = statistics.median(local_extra)
                    row["ray1_overhead_ms_per_tile"] = statistics.median(ray_extra)
            row["ray2_vs_ray1"] = row["ray2_tiles_per_s"] / row["ray1_tiles_per_s"]
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="an existing Ray cluster (default: start a head on 127.0.0.1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    head = None
    address = args.address
    if address is None:
        address, head, temp = start_head()
    try:
        results = run(address)
    finally:
        if head is not None:
            stop_head(head, temp)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
