"""Reading the official RAM and DAPE files into :class:`RamTagger`, with one-line errors.

The layouts, from the official code (``ram/models/ram_lora.py``, ``ram/models/utils.py``,
``swin_transformer_lora.py``, ``bert_lora.py`` in bryanswkim/Chain-of-Zoom, the same files
as in cswry/OSEDiff and cswry/SeeSR) and from running it (``official-coz.md`` §11):

- ``ram_swin_large_14m.pth`` is ``{"model": state_dict}`` of the whole RAM model
  (``load_checkpoint_swinlarge``). Its buffers ``relative_position_index`` and
  ``attn_mask`` are dropped and rebuilt, keys ``vision_multi.*`` are read as
  ``tagging_head.*``, and everything the tagger does not use (``tag_encoder``,
  ``text_decoder``…) is ignored, as the official non-strict load ignores it.
- ``DAPE.pth`` is a flat dict of loralib LoRA tensors (``*.lora_A``, ``*.lora_B``),
  loaded non-strictly over the RAM model. In RAM-LoRA every Swin block's ``attn.qkv`` is a
  ``loralib.MergedLinear(r=8, enable_lora=[True, False, True])`` (LoRA on q and v, none
  on k) and every BERT ``query`` and ``key`` a ``loralib.Linear(r=8)``; ``lora_alpha`` is
  loralib's default 1, so the scale is ``1/r``. ``.eval()`` merges each LoRA into its
  weight (``W += B·A·scale``).
- RAM ties the weights of the tag encoder's first layers to the tagging head's layers
  (``tie_encoder_decoder_weights``) but not their LoRA tensors, so on ``.eval()`` both the
  tag encoder's and the tagging head's ``query``/``key`` LoRA are merged into the same
  shared tensor, the tag encoder's first (module order). We merge both, in that order.

The architecture is read from the tensors' shapes (widths, depths and heads of the Swin
stages, number of tags, head layers and widths); what RAM takes from its configs and no
shape shows (the input size, the window size, the tagging head's attention heads) comes
from the caller, defaulting to RAM's values, and every stage's position table is checked
against the window.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from chainzoom.errors import ModelError, one_line
from chainzoom.prompts.dape.swin import SwinConfig
from chainzoom.prompts.dape.tagging import HeadConfig, RamConfig, RamTagger

#: Buffers RAM's loader deletes (they are rebuilt from the sizes).
_REBUILT = ("relative_position_index", "attn_mask")
_STAGE = re.compile(r"^visual_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
_HEAD_LAYER = re.compile(r"^tagging_head\.encoder\.layer\.(\d+)\.")
_SWIN_LORA = re.compile(r"^(visual_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv)\.lora_[AB]$")
_BERT_LORA = re.compile(
    r"^(tag_encoder|tagging_head)\.encoder\.layer\.(\d+)\.(crossattention\.self\.(?:query|key))\.lora_[AB]$"
)


def read_file(path: str | os.PathLike[str], what: str) -> object:
    """``torch.load`` a file safely (tensors only), memory-mapped when its format allows."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"dape: {what} {file} does not exist")
    try:
        # RAM's file is large and the tagger needs only part of it: map it, do not read it all
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise ModelError(f"dape: cannot read {what} {file}: {one_line(exc)}") from None
    except Exception as exc:
        raise ModelError(f"dape: cannot read {what} {file}: {one_line(exc)}") from None
    try:  # the legacy (non-zip) torch.save format cannot be mapped, only read
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"dape: cannot read {what} {file}: {one_line(exc)}") from None


def ram_state_dict(loaded: object, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The RAM model's tensors from a loaded ``ram_swin_large_14m.pth``, with RAM's renames."""
    where = f"dape: {Path(path).expanduser()} is not a RAM checkpoint"
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("model"), Mapping):
        raise ModelError(f"{where} (expected a dict with a 'model' state dict, as ram_swin_large_14m.pth is)")
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded["model"].items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{where} ({key} is not a tensor)")
        if key.startswith("vision_multi."):
            key = "tagging_head." + key.removeprefix("vision_multi.")
        if not key.endswith(_REBUILT):
            state[key] = value
    if "visual_encoder.patch_embed.proj.weight" not in state or "label_embed" not in state:
        raise ModelError(f"{where} (no Swin image encoder or tag embeddings: visual_encoder.*, label_embed)")
    return state


def _shape(state: Mapping[str, torch.Tensor], key: str, path: str | os.PathLike[str]) -> tuple[int, ...]:
    if key not in state:
        raise ModelError(f"dape: {Path(path).expanduser()} is not a RAM checkpoint this tagger can read (no {key})")
    return tuple(state[key].shape)


def read_config(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *, image_size: int, window: int, head_heads: int
) -> RamConfig:
    """The tagger's sizes from the tensors' shapes, plus those RAM takes from its configs.

    The input size, the window size and the tagging head's heads come from the caller (RAM's
    configs: 384, 12, 4), as the official code takes them from its configs, not from the file.
    """
    embed_dim, _, patch, _ = _shape(state, "visual_encoder.patch_embed.proj.weight", path)
    blocks: dict[int, int] = {}
    for key in state:
        if match := _STAGE.match(key):
            stage, block = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ModelError(f"dape: {Path(path).expanduser()} is not a RAM checkpoint (no Swin stages 0..n)")
    depths = tuple(blocks[stage] for stage in range(len(blocks)))
    heads, windows = [], []
    for stage in range(len(depths)):
        rows, stage_heads = _shape(
            state, f"visual_encoder.layers.{stage}.blocks.0.attn.relative_position_bias_table", path
        )
        side = math.isqrt(rows)
        if side * side != rows or side % 2 == 0:
            raise ModelError(f"dape: {Path(path).expanduser()} is not a RAM checkpoint (stage {stage}'s bias table)")
        heads.append(stage_heads)
        windows.append((side + 1) // 2)
    hidden = _shape(state, "visual_encoder.layers.0.blocks.0.mlp.fc1.weight", path)[0]
    swin = SwinConfig(
        image_size=image_size,
        patch_size=patch,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(heads),
        window_size=window,
        mlp_ratio=max(1, hidden // embed_dim),
    )
    tokens = patch * 2 ** (len(depths) - 1)
    for stage, found in enumerate(windows):
        side = swin.resolution(stage)
        expected = swin.stage_window(stage)[0]
        if found != expected:
            # the official loader would resize such tables to its configured window; we do not
            raise ModelError(
                f"dape: stage {stage} of {Path(path).expanduser()} has position tables for {found}x{found} windows, "
                f"a {image_size} px input with window={window} needs {expected}x{expected} (RAM's Swin-L: 384, 12)"
            )
        # no padding in RAM's Swin: the windows must tile every map
        if image_size % tokens or side % expected:
            raise ModelError(
                f"dape: {expected}x{expected} windows do not tile stage {stage}'s {side}x{side} map at a "
                f"{image_size} px input (image_size=; RAM's Swin-L is 384)"
            )
    layers = 1 + max((int(m[1]) for key in state if (m := _HEAD_LAYER.match(key))), default=-1)
    classes, width = _shape(state, "label_embed", path)
    head = HeadConfig(
        hidden_size=_shape(state, "fc.weight", path)[1],
        num_layers=layers,
        num_heads=head_heads,
        intermediate_size=_shape(state, "tagging_head.encoder.layer.0.intermediate.dense.weight", path)[0],
        embed_width=width,
        num_classes=classes,
    )
    if head.hidden_size % head_heads:
        raise ModelError(f"dape: heads={head_heads} does not divide the tagging head's width {head.hidden_size}")
    return RamConfig(swin=swin, head=head)


def _lora_delta(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """loralib's ``B·A`` for ``groups`` stacked LoRA pairs, computed with loralib's operation."""
    if groups == 1:
        return b @ a
    return F.conv1d(a.unsqueeze(0), b.unsqueeze(-1), groups=groups).squeeze(0)


def merge_dape(
    state: dict[str, torch.Tensor], lora: object, path: str | os.PathLike[str], config: RamConfig
) -> dict[str, int]:
    """Merge DAPE's LoRA tensors into ``state`` (fp32) as RAM-LoRA's ``.eval()`` does; counts by part."""
    file = Path(path).expanduser()
    if not isinstance(lora, Mapping) or not lora:
        raise ModelError(f"dape: {file} is not a DAPE file (expected a dict of LoRA tensors)")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        if not isinstance(key, str) or not key.endswith((".lora_A", ".lora_B")) or not isinstance(value, torch.Tensor):
            raise ModelError(f"dape: {file} is not a DAPE file ({key!r} is not a LoRA tensor)")
        module, _, part = key.rpartition(".")
        pairs.setdefault(module, {})[part] = value.float()
    used = {"visual_encoder": 0, "tagging_head": 0, "tag_encoder": 0}
    tied = config.head.num_layers
    # RAM's module order (.eval() merges in it): visual encoder, tag encoder, tagging head
    order = sorted(pairs, key=lambda m: (not m.startswith("visual_encoder"), not m.startswith("tag_encoder"), m))
    for module in order:
        if set(pairs[module]) != {"lora_A", "lora_B"}:
            raise ModelError(f"dape: {file} has only one of {module}.lora_A / lora_B")
        a, b = pairs[module]["lora_A"], pairs[module]["lora_B"]
        enabled: tuple[bool, ...]
        if swin := _SWIN_LORA.match(module + ".lora_A"):
            target, groups, enabled = swin[1], 2, (True, False, True)
        elif bert := _BERT_LORA.match(module + ".lora_A"):
            owner, layer = bert[1], int(bert[2])
            if owner == "tag_encoder" and layer >= tied:
                continue  # an untied tag-encoder layer: it never runs when tagging
            target, groups, enabled = f"tagging_head.encoder.layer.{layer}.{bert[3]}", 1, (True,)
        elif module.startswith(("tag_encoder.", "text_decoder.")):
            continue  # the captioning parts of RAM, which tagging does not run
        else:
            raise ModelError(f"dape: {file} does not fit RAM ({module} is no LoRA layer of RAM)")
        weight_key = f"{target}.weight"
        if weight_key not in state:
            raise ModelError(f"dape: {file} does not fit this RAM checkpoint (it has no {weight_key})")
        weight = state[weight_key].float()
        out_features, in_features = weight.shape
        rank, rest = divmod(a.shape[0], groups) if a.dim() == 2 else (0, 1)
        block_rows = out_features // len(enabled)
        if rest or b.dim() != 2 or a.shape[1] != in_features or b.shape != (block_rows * groups, rank):
            raise ModelError(
                f"dape: {file} does not fit this RAM checkpoint ({module}: lora_A {list(a.shape)}, "
                f"lora_B {list(b.shape)} for a {list(weight.shape)} weight)"
            )
        delta = _lora_delta(a, b, groups)
        if groups > 1:  # loralib's zero_pad: the enabled output blocks get the rows, the others none
            padded = delta.new_zeros(weight.shape)
            rows = torch.tensor(enabled).repeat_interleave(block_rows)
            padded[rows] = delta
            delta = padded
        state[weight_key] = weight + delta * (1.0 / rank)
        used[module.split(".")[0]] += 1
    if not used["visual_encoder"] and not used["tagging_head"]:
        raise ModelError(f"dape: {file} holds no LoRA for RAM's image encoder or tagging head")
    return used


def build_tagger(state: dict[str, torch.Tensor], config: RamConfig, path: str | os.PathLike[str]) -> RamTagger:
    """A :class:`RamTagger` holding ``state``'s tensors (as float32); wrong shapes are one line."""
    model = RamTagger(config)
    wanted = model.state_dict()
    file = Path(path).expanduser()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise ModelError(f"dape: {file} lacks {len(missing)} tensor(s) of RAM's tagger (first: {missing[0]})")
    for key, tensor in wanted.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"dape: {file} has {key} of shape {list(state[key].shape)}, RAM's architecture needs {list(tensor.shape)}"
            )
    model.load_state_dict({key: state[key].float() for key in wanted}, strict=True)
    return model.eval()


def load_tagger(
    ram_path: str | os.PathLike[str],
    dape_path: str | os.PathLike[str] | None,
    *,
    image_size: int = 384,
    window: int = 12,
    head_heads: int = 4,
) -> tuple[RamTagger, dict[str, int]]:
    """RAM (and DAPE's LoRA, merged) as a float32 tagger on the CPU, plus the LoRA counts."""
    state = ram_state_dict(read_file(ram_path, "RAM checkpoint"), ram_path)
    config = read_config(state, ram_path, image_size=image_size, window=window, head_heads=head_heads)
    state = {key: value for key, value in state.items() if not key.startswith(("tag_encoder.", "text_decoder."))}
    used = {"visual_encoder": 0, "tagging_head": 0, "tag_encoder": 0}
    if dape_path is not None:
        used = merge_dape(state, read_file(dape_path, "DAPE file"), dape_path, config)
    return build_tagger(state, config, ram_path), used
