"""Where and how models run: device, precision, threads, seed, engine and tiling.

:class:`Runtime` is plain data that checks itself on construction without importing
torch, so configs can be validated (and ``chainzoom models`` listed) in milliseconds.
:meth:`Runtime.resolve` turns ``device="auto"`` into a real device, checks that the
device exists, and applies threads; factories always receive a resolved one. The seed is
applied where a run starts (the run driver), not here: resolving a runtime changes no state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chainzoom.errors import OptionError

if TYPE_CHECKING:
    import torch

#: ``auto``: the backbone's fastest safe precision on this machine (:func:`auto_dtype`).
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: The precisions a model actually runs in.
MODEL_DTYPES = ("float32", "float16", "bfloat16")
#: CPU flags of native bf16 dot products: with them bf16 convolutions run about twice as fast
#: as float32 (RRDBNet measured, docs/performance.md); without them several times slower.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: How a backbone runs: plain torch, ``torch.compile``, or the ncnn runtime (bundled models).
ENGINES = ("torch", "compile", "ncnn")
DEVICE_KINDS = ("cpu", "cuda", "mps")
#: Which models stay on the device between uses (chainzoom.memory): ``auto`` picks from free memory.
MEMORY_PLANS = ("auto", "resident", "text-offload", "sequential")
#: Smallest tile side in input px.
MIN_TILE = 32
#: Input pixels shared by neighbouring tiles: about half is context each side needs
#: (RRDBNet measured: 52 px of context still left 1.6/255 on one crop, 78 px 0.4/255),
#: the middle is blended.
DEFAULT_OVERLAP = 160
#: Tile side in input px of full-image mode (``zoom --full``) when ``--tile`` is not given:
#: big enough that the overlap (context RRDBNet needs) costs little, small enough for a CPU.
#: Local zoom chooses its tile from free memory instead (``Runtime.tile=None``).
FULL_IMAGE_TILE = 512


@dataclass(frozen=True)
class Runtime:
    """Settings shared by every component.

    ``tile=None`` tiles only when an input does not fit in half the free memory (full-image
    mode then uses :data:`FULL_IMAGE_TILE`);
    ``tile_overlap=None`` is :data:`DEFAULT_OVERLAP`, or half the tile when the tile
    is smaller than that.
    """

    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    seed: int = 0
    engine: str = "torch"
    tile: int | None = None
    tile_overlap: int | None = None
    memory: str = "auto"
    #: Run bfloat16 on a CPU without native bf16 all the same (several times slower).
    allow_slow_dtype: bool = False

    def __post_init__(self) -> None:
        kind = self.device.split(":", 1)[0]
        if self.device != "auto" and kind not in DEVICE_KINDS:
            raise OptionError("device", f"must be auto, cpu, cuda[:N] or mps, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise OptionError("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise OptionError("engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.memory not in MEMORY_PLANS:
            raise OptionError("memory", f"must be one of {', '.join(MEMORY_PLANS)}, got {self.memory!r}")
        if self.threads is not None and self.threads < 1:
            raise OptionError("threads", f"must be at least 1, got {self.threads}")
        if self.tile is not None and self.tile < MIN_TILE:
            raise OptionError("tile", f"must be at least {MIN_TILE}, got {self.tile}")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise OptionError("tile_overlap", f"must be at least 0, got {self.tile_overlap}")
        if self.tile is not None and self.tile_overlap is not None and self.tile_overlap >= self.tile:
            raise OptionError("tile_overlap", f"({self.tile_overlap}) must be smaller than the tile ({self.tile})")

    @property
    def overlap(self) -> int:
        """The tile overlap in effect (see the class docstring)."""
        if self.tile_overlap is not None:
            return self.tile_overlap
        if self.tile is not None and self.tile <= DEFAULT_OVERLAP:
            return self.tile // 2
        return DEFAULT_OVERLAP

    def model_dtype(self, supported: tuple[str, ...] = MODEL_DTYPES, cpu_bf16: bool = False) -> str:
        """The precision a model that runs in ``supported`` gets here: the one named, or what
        ``auto`` picks (:func:`auto_dtype`). For factories called directly; the registry
        resolves ``auto`` from the model's facts before it calls them."""
        if self.dtype != "auto":
            return self.dtype
        return auto_dtype(self.device, supported, cpu_bf16)[0]

    @property
    def resolved(self) -> bool:
        return self.device != "auto"

    def resolve(self) -> Runtime:
        """The same runtime on a device that exists, with threads applied to torch.

        ``dtype="auto"`` stays: which precision is best depends on the model too, so the
        registry resolves it per component (:func:`auto_dtype`). On the CPU, float16 is
        refused (its convolutions are not implemented for every op), and bfloat16 is refused
        where the CPU has no native bf16 (several times slower than float32) unless
        ``allow_slow_dtype``.
        """
        import torch

        device = resolve_device(self.device)
        if device == "cpu" and self.dtype == "float16":
            raise OptionError("dtype", "float16 is for GPUs; on the CPU use auto, float32 or bfloat16")
        if device == "cpu" and self.dtype == "bfloat16" and not self.allow_slow_dtype and not native_bf16():
            raise OptionError(
                "dtype",
                "bfloat16 on this CPU (no AVX512-BF16 or AMX) runs several times slower than float32; "
                "use auto or float32, or add --allow-slow-dtype",
            )
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return replace(self, device=device)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :data:`DTYPES` name (``"bfloat16"`` -> ``torch.bfloat16``).

    ``auto`` reaching here is float32: backbones get ``auto`` resolved by the registry from
    their facts; prompters and training keep float32 unless a precision is named.
    """
    import torch

    dtypes = {"auto": torch.float32, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return dtypes[name]


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether the CPU computes bf16 dot products natively (AVX512-BF16 or AMX)."""
    found = cpu_flags()
    return any(flag in found for flag in NATIVE_BF16_FLAGS)


def auto_dtype(device: str, supported: tuple[str, ...], cpu_bf16: bool) -> tuple[str, str]:
    """``dtype="auto"`` for a model that runs in ``supported`` on ``device``: the precision and why.

    - CUDA: float16 where the model takes it, else bfloat16 where the card and the model do;
    - CPU: bfloat16 where the CPU has native bf16 and the model's facts say bf16 was measured
      faster there and within its tolerance (``cpu_bf16``), else float32;
    - elsewhere float32.
    """
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        import torch

        if "float16" in supported:
            return "float16", "CUDA: half precision"
        if "bfloat16" in supported and torch.cuda.is_bf16_supported():
            return "bfloat16", "CUDA: the card and the model take bfloat16"
        return "float32", "CUDA: the model takes no half precision"
    if kind == "cpu" and cpu_bf16 and "bfloat16" in supported:
        if native_bf16():
            return "bfloat16", "the CPU has native bf16 (AVX512-BF16 or AMX), measured about 2x float32"
        return "float32", "the CPU has no native bf16 (AVX512-BF16 or AMX): float32 is faster"
    return "float32", "no faster precision measured safe for this model here"


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", f"{device}: no CUDA GPU is available to torch here (try cpu)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise OptionError("device", f"{device}: Apple MPS is not available here (try cpu)")
    return device
