"""Read the official OSEDiff / Chain-of-Zoom adapter files and merge them into a base model.

The official checkpoints are pickles (``torch.save``) of plain tensors, lists and
strings, so they load with ``torch.load(weights_only=True)``: no code runs from them.
Their LoRA weights come in two layouts:

- the PEFT layout (VAE encoders, the SD 2.1 UNet): ``<module>.lora_A.<adapter>.weight``
  and ``<module>.lora_B.<adapter>.weight`` per adapted layer, and ``<module>.base_layer.*``
  for the wrapped layer's own weights;
- a bare list of ``[up, down]`` pairs (the SD3 transformer), handled by the SD3 module.

Every adapter is **merged** into the base weights (``W += scaling * up @ down``) instead
of wrapping layers: inference then costs exactly what the base model costs, and no
PEFT machinery is needed at run time. Merging is exact up to float rounding; the
tests compare it with PEFT's own unmerged forward.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from chainzoom.errors import ChainZoomError

#: ``LoraConfig`` leaves ``lora_alpha`` at PEFT's default in every official training
#: script, so a rank-r adapter is scaled by 8 / r (2 for the released rank 4).
PEFT_DEFAULT_LORA_ALPHA = 8.0

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])\.(?P<adapter>[^.]+)\.weight$")


def load_checkpoint(path: str | Path, what: str) -> object:
    """Unpickle an official checkpoint without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise ChainZoomError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ChainZoomError(f"cannot read {what} {path}: not a checkpoint torch can load safely ({exc})") from exc


@dataclass
class PeftWeights:
    """A PEFT-layout state dict split into plain base weights and per-layer LoRA pairs."""

    base: dict[str, torch.Tensor] = field(default_factory=dict)
    #: module path -> one (A, B) pair per adapter attached to that module
    loras: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


def split_peft_state_dict(state_dict: dict[str, torch.Tensor], source: str) -> PeftWeights:
    """Group ``lora_A``/``lora_B`` tensors by layer and strip ``base_layer`` from the rest."""
    weights = PeftWeights()
    halves: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ChainZoomError(f"{source}: entry {key!r} is not a tensor")
        match = _LORA_KEY.match(key)
        if match:
            halves.setdefault((match["module"], match["adapter"]), {})[match["kind"]] = tensor
        else:
            weights.base[key.replace(".base_layer.", ".")] = tensor
    for (module, adapter), pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise ChainZoomError(f"{source}: layer {module!r} has only one half of LoRA adapter {adapter!r}")
        weights.loras.setdefault(module, []).append((pair["A"], pair["B"]))
    return weights


def load_base_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str, strict: bool) -> None:
    """Copy ``weights`` into ``model``'s parameters; ``strict`` also requires every parameter."""
    own = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(own))
    missing = sorted(set(own) - set(weights)) if strict else []
    if unknown or missing:
        parts = (_examples("unknown entries", unknown), _examples("missing parameters", missing))
        raise ChainZoomError(f"{source} does not match the base model: " + "; ".join(p for p in parts if p))
    for name, tensor in weights.items():
        _check_shape(source, name, own[name].shape, tensor.shape)
    with torch.no_grad():
        for name, tensor in weights.items():
            own[name].copy_(tensor)


def merge_peft_loras(
    model: nn.Module, loras: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], source: str, rank: int | None = None
) -> None:
    """Merge PEFT LoRA pairs into ``model``'s Linear/Conv2d layers, scaled by ``alpha / rank``."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    unknown = sorted(name for name in loras if name not in layers)
    if unknown:
        reason = _examples("LoRA on layers it has no Linear/Conv2d for", unknown)
        raise ChainZoomError(f"{source} does not match the base model: {reason}")
    for name, pairs in loras.items():
        for lora_a, lora_b in pairs:
            found = lora_a.shape[0]
            if rank is not None and found != rank:
                raise ChainZoomError(f"{source}: layer {name!r} has LoRA rank {found}, the file declares {rank}")
            up = lora_b.reshape(lora_b.shape[0], -1)
            down = lora_a.reshape(found, -1)
            merge_low_rank(layers[name], up, down, PEFT_DEFAULT_LORA_ALPHA / found, f"{source}: layer {name!r}")


def merge_low_rank(
    layer: nn.Linear | nn.Conv2d, up: torch.Tensor, down: torch.Tensor, scaling: float, where: str
) -> None:
    """``layer.weight += scaling * up @ down``, computed in float32 whatever the layer's dtype.

    ``up`` is ``[out, r]``, ``down`` is ``[r, in * kh * kw]``; for a convolution the
    product is reshaped to the kernel (PEFT's LoRA ``A`` has the layer's kernel, ``B`` is 1x1).
    """
    weight = layer.weight
    fits = up.dim() == down.dim() == 2 and up.shape == (weight.shape[0], down.shape[0])
    if not fits or down.shape[1] != weight[0].numel():
        raise ChainZoomError(
            f"{where}: LoRA shapes up {tuple(up.shape)} / down {tuple(down.shape)} do not fit a layer "
            f"of weight shape {tuple(weight.shape)} (LoRA made for another base model?)"
        )
    delta = (up.float() @ down.float()).reshape(weight.shape) * scaling
    with torch.no_grad():
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))


def _check_shape(source: str, name: str, expected: torch.Size, found: torch.Size) -> None:
    if expected != found:
        raise ChainZoomError(
            f"{source} does not match the base model: {name!r} is {tuple(found)} in the file, "
            f"{tuple(expected)} in the model"
        )


def _examples(label: str, names: list[str], shown: int = 3) -> str:
    """``"<label>: a, b, c and 4 more"``, or ``""`` when there are none."""
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{label}: {', '.join(names[:shown])}{more}"
