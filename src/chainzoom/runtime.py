"""Turn the user's device/precision/thread flags into a checked :class:`Runtime`."""

from __future__ import annotations

import torch

from chainzoom.errors import ChainZoomError
from chainzoom.registry import Runtime

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ChainZoomError(f"--device {device}: no CUDA GPU is available to torch here (try --device cpu)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ChainZoomError(f"--device {device}: Apple MPS is not available here (try --device cpu)")
    if kind not in ("cpu", "cuda", "mps"):
        raise ChainZoomError(f"--device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    return device


def resolve_runtime(device: str, dtype: str, threads: int | None, seed: int) -> Runtime:
    """Check the combination before any model loads.

    Half precision is refused on the CPU: without AVX512-bf16 it is several times
    slower than float32, and float16 convolutions are not implemented for every op.
    """
    resolved = resolve_device(device)
    if dtype not in DTYPES:
        raise ChainZoomError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "float32" and resolved == "cpu":
        raise ChainZoomError(f"--dtype {dtype} is for GPUs; on the CPU use float32 (it is faster there)")
    if threads is not None:
        if threads < 1:
            raise ChainZoomError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return Runtime(device=resolved, dtype=dtype, threads=threads, seed=seed)
