"""Merge a PEFT LoRA adapter (the GRPO-aligned prompt model) into a transformers VLM.

The official aligned adapter (``ckpt/VLM_LoRA/checkpoint-10000``: ``adapter_config.json``
+ ``adapter_model.safetensors``, LoRA r=8, alpha=32 on the language model's q/k/v/o and
MLP projections) was saved with transformers 4.49, whose Qwen2.5-VL module names were
``model.layers.*`` (language model) and ``visual.*`` (vision tower). transformers 5
renamed them ``model.language_model.layers.*`` and ``model.visual.*``. Loaded with a
plain ``PeftModel.from_pretrained`` (peft 0.21.2, transformers 5.23.0) such an adapter
is **silently dropped**: none of its keys match, peft only warns, and the "aligned"
model is the base model. Its target regex ``^(model).*\\.(q_proj|...|down_proj)$`` also
matches the vision tower's MLP under the new names, which it never trained.

So we load it explicitly:

1. read the safetensors weights and rename their module paths with the model's own
   legacy renaming rules (the ones transformers applies to old *model* checkpoints);
2. target exactly the modules that have weights in the file, nothing the regex
   happens to match;
3. load, and refuse the adapter if any of its tensors did not land in the model;
4. merge (``merge_and_unload``), as the official code does, so generation runs at the
   base model's speed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import torch

from chainzoom.errors import ChainZoomError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: The model type passes through a merge: peft edits the model's layers in place and hands it back.
_Model = TypeVar("_Model", bound="PreTrainedModel")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)(?P<rest>.*)$")


def adapter_files(folder: str | Path) -> tuple[Path, Path]:
    """The adapter's config and weights, or a clear error naming what is missing."""
    folder = Path(folder).expanduser()
    config, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not folder.is_dir():
        raise ChainZoomError(f"adapter {folder}: no such folder (expected {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    for path in (config, weights):
        if not path.is_file():
            raise ChainZoomError(f"adapter {folder}: {path.name} is missing (a PEFT LoRA folder has both)")
    return config, weights


def adapter_digest(folder: str | Path) -> str:
    """sha256 of the adapter's config and weights: identifies it in caches and manifests."""
    digest = hashlib.sha256()
    for path in adapter_files(folder):
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def legacy_renamings(model: PreTrainedModel) -> list[tuple[re.Pattern[str], str]]:
    """The regex renamings transformers applies to the model's old-layout checkpoints."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    rules = []
    for transform in get_model_conversion_mapping(model):
        if type(transform) is WeightRenaming:
            for source, target in zip(transform.source_patterns, transform.target_patterns):
                rules.append((re.compile(source), target))
    return rules


def rename_module(path: str, rules: list[tuple[re.Pattern[str], str]], modules: set[str]) -> str:
    """``path`` as the model names it now: unchanged if it exists, else the first rule that fits."""
    if path in modules:
        return path
    for pattern, target in rules:
        renamed, count = pattern.subn(target, path, count=1)
        if count and renamed in modules:
            return renamed
    return path


def merge_adapter(model: _Model, folder: str | Path) -> _Model:
    """Load the LoRA adapter in ``folder`` into ``model`` and merge it; returns the merged model."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config_path, weights_path = adapter_files(folder)
    try:
        config = LoraConfig.from_pretrained(str(config_path.parent))
    except (TypeError, ValueError) as exc:
        raise ChainZoomError(f"adapter {config_path}: not a LoRA adapter config ({exc})") from None
    weights = load_file(str(weights_path))

    modules = {name for name, _ in model.named_modules()}
    rules = legacy_renamings(model)
    renamed: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    for key, tensor in weights.items():
        match = _LORA_KEY.match(key.removeprefix(_PREFIX))
        if match is None:
            raise ChainZoomError(f"adapter {weights_path}: {key!r} is not a LoRA weight (only LoRA is supported)")
        module = rename_module(match["module"], rules, modules)
        if module not in modules:
            raise ChainZoomError(
                f"adapter {weights_path}: module {match['module']!r} does not exist in this model "
                "(an adapter for another architecture?)"
            )
        targets.add(module)
        renamed[f"{_PREFIX}{module}.{match['part']}{match['rest']}"] = tensor
    if not targets:
        raise ChainZoomError(f"adapter {weights_path}: holds no LoRA weights")

    config.target_modules = sorted(targets)
    config.inference_mode = True
    # The official config names a ModelScope cache path; the model we merge into is the base.
    config.base_model_name_or_path = getattr(model, "name_or_path", None)
    peft_model = get_peft_model(model, config)
    result = set_peft_model_state_dict(peft_model, renamed)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ChainZoomError(f"adapter {weights_path}: {len(unexpected)} tensor(s) did not load, e.g. {unexpected[0]}")
    return cast(_Model, peft_model.merge_and_unload())
