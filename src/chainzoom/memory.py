"""Which models stay on the device between uses: the memory plan (``--memory``).

The paper's stack is three groups of weights: the SR model's text encoders (``text``:
CLIP-L, CLIP-G, T5-XXL), its denoiser and VAE (``sr``), and the prompt VLM (``vlm``).
Each step uses them in the order vlm, text, sr. On a GPU that holds all three they stay
(``resident``); the official ``--efficient_memory`` instead moves every model off and on
at every step (``sequential``: each group is on the device only while it runs), which
costs seconds a step. In between, ``text-offload`` keeps the SR model resident, where
its float32 transformer is the most expensive thing to move: the text encoders run once
per prompt and leave, and the VLM makes room for them while they run; so the SR model
and the VLM alternate only with the text encoders, never with each other.

``auto`` (the default) takes the most resident plan whose peak fits in the device's
free memory (:func:`choose_plan`); on a CPU every plan is the same and nothing moves.
The peak is simulated over two steps from each group's weight bytes plus the working
memory of the group that runs (:func:`peak_bytes`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chainzoom.errors import OptionError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from chainzoom.runtime import Runtime

#: The order in which one chain step uses the groups.
STEP_ORDER = ("vlm", "text", "sr")
#: Of the free device memory, the share a plan may fill (the rest is the allocator's slack).
HEADROOM = 0.9


@dataclass(frozen=True)
class MemoryPlan:
    """``leaves``: groups moved off the device after each use; ``evicts[g]``: groups moved off before ``g``."""

    name: str
    leaves: frozenset[str] = frozenset()
    evicts: Mapping[str, frozenset[str]] = field(default_factory=dict)


PLANS = {
    plan.name: plan
    for plan in (
        MemoryPlan("resident"),
        MemoryPlan("text-offload", leaves=frozenset({"text"}), evicts={"text": frozenset({"vlm"})}),
        MemoryPlan("sequential", leaves=frozenset(STEP_ORDER)),
    )
}
#: From the most resident (fastest) plan to the least.
PREFERENCE = ("resident", "text-offload", "sequential")


def peak_bytes(plan: MemoryPlan, weights: Mapping[str, int], work: Mapping[str, int]) -> int:
    """The most device memory ``plan`` holds over two chain steps of the groups in ``weights``.

    ``work`` is the working memory (activations) of a group while it runs.
    """
    resident: set[str] = set()
    peak = 0
    for name in STEP_ORDER * 2:
        if name not in weights:
            continue
        resident -= plan.evicts.get(name, frozenset())
        resident.add(name)
        peak = max(peak, sum(weights[g] for g in resident) + work.get(name, 0))
        if name in plan.leaves:
            resident.discard(name)
    return peak


def choose_plan(weights: Mapping[str, int], work: Mapping[str, int], free: int) -> MemoryPlan:
    """The most resident plan whose peak fits in ``HEADROOM`` of ``free`` bytes (else ``sequential``)."""
    for name in PREFERENCE:
        if peak_bytes(PLANS[name], weights, work) <= free * HEADROOM:
            return PLANS[name]
    return PLANS["sequential"]


def initial_plan(runtime: Runtime, efficient_memory: bool = False) -> MemoryPlan:
    """The plan a component starts with: the one asked for, ``sequential`` for the official
    ``efficient_memory``, else ``resident`` until the pipeline knows every group (``auto``)."""
    if efficient_memory:
        if runtime.memory not in ("auto", "sequential"):
            raise OptionError("memory", f"{runtime.memory} contradicts efficient_memory (the sequential plan)")
        return PLANS["sequential"]
    return PLANS.get(runtime.memory, PLANS["resident"])


class Placement:
    """Groups of modules on one device, moved on and off as a :class:`MemoryPlan` says.

    One placement can hold the groups of several components (the SR backbone's and the
    VLM prompter's), which is what lets a plan move one to make room for the other.
    """

    def __init__(self, device: torch.device, plan: MemoryPlan, automatic: bool = False) -> None:
        self.device = device
        self.plan = plan
        #: ``--memory auto``: the pipeline may choose the plan once it knows every group.
        self.automatic = automatic
        self.groups: dict[str, list[nn.Module]] = {}
        self.resident: set[str] = set()

    def add(self, name: str, modules: list[nn.Module], resident: bool = False) -> None:
        """Manage ``modules`` as group ``name``; ``resident``: they are on the device already."""
        self.groups[name] = modules
        if resident:
            self.resident.add(name)

    def weight_bytes(self, name: str) -> int:
        return sum(p.numel() * p.element_size() for m in self.groups[name] for p in m.parameters())

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Have group ``name`` on the device for the duration of the block."""
        for other in (self.plan.evicts.get(name, frozenset()) | (self.plan.leaves - {name})) & self.resident:
            self._move(other, resident=False)
        if name not in self.resident:
            self._move(name, resident=True)
        try:
            yield
        finally:
            if name in self.plan.leaves:
                self._move(name, resident=False)

    def onload(self) -> None:
        """Move every group the plan keeps resident to the device."""
        for name in self.groups:
            if name not in self.plan.leaves and name not in self.resident:
                self._move(name, resident=True)

    def offload(self) -> None:
        """Move every group to the CPU and give the device memory back."""
        for name in list(self.resident):
            self._move(name, resident=False)

    def _move(self, name: str, resident: bool) -> None:
        import torch

        target = self.device if resident else torch.device("cpu")
        for module in self.groups[name]:
            module.to(target)
        if resident:
            self.resident.add(name)
            return
        self.resident.discard(name)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
