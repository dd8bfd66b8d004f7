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

DTYPES = ("float32", "float16", "bfloat16")
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
    dtype: str = "float32"
    threads: int | None = None
    seed: int = 0
    engine: str = "torch"
    tile: int | None = None
    tile_overlap: int | None = None
    memory: str = "auto"

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

    @property
    def resolved(self) -> bool:
        return self.device != "auto"

    def resolve(self) -> Runtime:
        """The same runtime on a device that exists, with threads applied to torch.

        Half precision is refused on the CPU: without AVX512-bf16 it is several times
        slower than float32, and float16 convolutions are not implemented for every op.
        """
        import torch

        device = resolve_device(self.device)
        if self.dtype != "float32" and device == "cpu":
            raise OptionError("dtype", f"{self.dtype} is for GPUs; on the CPU use float32 (it is faster there)")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return replace(self, device=device)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :data:`DTYPES` name (``"bfloat16"`` -> ``torch.bfloat16``)."""
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return dtypes[name]


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
