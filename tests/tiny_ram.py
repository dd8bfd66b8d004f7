"""A tiny random RAM + DAPE, written key by key in the official checkpoint layout.

The keys are listed here from the official code's module tree (``ram/models/ram_lora.py``,
``swin_transformer_lora.py``, ``bert_lora.py``), not from chainzoom's modules, so a test
that loads these files checks chainzoom's key names against the official ones:

- ``ram.pth`` = ``{"model": state_dict}`` with the Swin encoder (including the
  ``relative_position_index`` and ``attn_mask`` buffers RAM saves), ``image_proj``,
  ``label_embed``, ``wordvec_proj``, ``fc``, the tagging head (cross-attention and
  feed-forward only), and parts a tagger never runs: the tag encoder (BERT with
  embeddings, self- and cross-attention; its first layers hold the same tensors as the
  tagging head, as RAM ties them) and the text decoder;
- ``dape.pth`` = loralib LoRA tensors: ``attn.qkv.lora_A [2r, C]`` / ``lora_B [2C, r]``
  (q and v) in every Swin block, ``query``/``key`` ``lora_A [r, in]`` / ``lora_B [out, r]``
  in every BERT attention of the tagging head, the tag encoder and the text decoder.

Sizes: 32 px input, patch 4, three stages of 8x8, 4x4 and 2x2 tokens with window 4 (the
last stage's window shrinks to its 2x2 map, as RAM's does), a 2-layer head of width 16 with
4 attention heads, 12-wide tag embeddings, 10 tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

TAGS = ("cat", "dog", "sky", "tree", "brick wall", "water", "fur", "grass", "road", "cloud")


@dataclass(frozen=True)
class TinyRam:
    ram: Path
    dape: Path
    tags: Path
    thresholds: Path
    image_size: int = 32

    def spec(self, *, dape: bool = True, **options: object) -> str:
        parts = [f"dape:{self.ram}", f"tags={self.tags}", f"image_size={self.image_size}", "window=4"]
        if dape:
            parts.append(f"dape={self.dape}")
        parts += [f"{key}={value}" for key, value in options.items()]
        return ",".join(parts)


EMBED = 8
DEPTHS = (2, 2, 2)
HEADS = (1, 2, 2)
WINDOW = 4
IMAGE = 32
PATCH = 4
HIDDEN = 16
WIDTH = 12
INTERMEDIATE = 32
LAYERS = 2
TAG_ENCODER_LAYERS = 3
RANK = 8


def _linear(state: dict, name: str, out: int, inp: int, gen: torch.Generator, bias: bool = True) -> None:
    state[f"{name}.weight"] = torch.randn(out, inp, generator=gen) / inp**0.5
    if bias:
        state[f"{name}.bias"] = torch.randn(out, generator=gen) * 0.1


def _norm(state: dict, name: str, width: int, gen: torch.Generator) -> None:
    state[f"{name}.weight"] = 1 + 0.1 * torch.randn(width, generator=gen)
    state[f"{name}.bias"] = 0.1 * torch.randn(width, generator=gen)


def _index(window: int) -> torch.Tensor:
    n = window * window
    return torch.zeros(n, n, dtype=torch.long)  # RAM rebuilds it; its saved value is never read


def _bert_layer(state: dict, name: str, gen: torch.Generator, *, self_attention: bool) -> None:
    parts = ["crossattention"] + (["attention"] if self_attention else [])
    for part in parts:
        key_width = WIDTH if part == "crossattention" else HIDDEN
        _linear(state, f"{name}.{part}.self.query", HIDDEN, HIDDEN, gen)
        _linear(state, f"{name}.{part}.self.key", HIDDEN, key_width, gen)
        _linear(state, f"{name}.{part}.self.value", HIDDEN, key_width, gen)
        _linear(state, f"{name}.{part}.output.dense", HIDDEN, HIDDEN, gen)
        _norm(state, f"{name}.{part}.output.LayerNorm", HIDDEN, gen)
    _linear(state, f"{name}.intermediate.dense", INTERMEDIATE, HIDDEN, gen)
    _linear(state, f"{name}.output.dense", HIDDEN, INTERMEDIATE, gen)
    _norm(state, f"{name}.output.LayerNorm", HIDDEN, gen)


def ram_state(seed: int = 0, *, classes: int = len(TAGS)) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a tiny RAM, in the official key layout."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    prefix = "visual_encoder"
    state[f"{prefix}.patch_embed.proj.weight"] = torch.randn(EMBED, 3, PATCH, PATCH, generator=gen) * 0.2
    state[f"{prefix}.patch_embed.proj.bias"] = torch.randn(EMBED, generator=gen) * 0.1
    _norm(state, f"{prefix}.patch_embed.norm", EMBED, gen)
    for stage, depth in enumerate(DEPTHS):
        dim = EMBED * 2**stage
        side = IMAGE // PATCH // 2**stage
        window = min(WINDOW, side)
        for block in range(depth):
            name = f"{prefix}.layers.{stage}.blocks.{block}"
            _norm(state, f"{name}.norm1", dim, gen)
            state[f"{name}.attn.relative_position_bias_table"] = (
                torch.randn((2 * window - 1) ** 2, HEADS[stage], generator=gen) * 0.5
            )
            state[f"{name}.attn.relative_position_index"] = _index(window)
            _linear(state, f"{name}.attn.qkv", 3 * dim, dim, gen)
            _linear(state, f"{name}.attn.proj", dim, dim, gen)
            _norm(state, f"{name}.norm2", dim, gen)
            _linear(state, f"{name}.mlp.fc1", 4 * dim, dim, gen)
            _linear(state, f"{name}.mlp.fc2", dim, 4 * dim, gen)
            if block % 2 and side > WINDOW:  # RAM saves the mask of every shifted block
                windows = (side // window) ** 2
                state[f"{name}.attn_mask"] = torch.zeros(windows, window * window, window * window)
        if stage < len(DEPTHS) - 1:
            _norm(state, f"{prefix}.layers.{stage}.downsample.norm", 4 * dim, gen)
            _linear(state, f"{prefix}.layers.{stage}.downsample.reduction", 2 * dim, 4 * dim, gen, bias=False)
    features = EMBED * 2 ** (len(DEPTHS) - 1)
    _norm(state, f"{prefix}.norm", features, gen)
    _linear(state, "image_proj", WIDTH, features, gen)
    state["label_embed"] = torch.randn(classes, WIDTH, generator=gen)
    _linear(state, "wordvec_proj", HIDDEN, WIDTH, gen)
    _linear(state, "fc", 1, HIDDEN, gen)
    for layer in range(LAYERS):
        _bert_layer(state, f"tagging_head.encoder.layer.{layer}", gen, self_attention=False)
    state["tag_encoder.embeddings.word_embeddings.weight"] = torch.randn(30, HIDDEN, generator=gen)
    state["tag_encoder.embeddings.position_embeddings.weight"] = torch.randn(40, HIDDEN, generator=gen)
    state["tag_encoder.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)
    _norm(state, "tag_encoder.embeddings.LayerNorm", HIDDEN, gen)
    for layer in range(TAG_ENCODER_LAYERS):
        _bert_layer(state, f"tag_encoder.encoder.layer.{layer}", gen, self_attention=True)
    for layer in range(LAYERS):  # tied: the tag encoder's first layers save the tagging head's tensors
        for key in list(state):
            head = f"tagging_head.encoder.layer.{layer}."
            if key.startswith(head):
                state[key.replace(head, f"tag_encoder.encoder.layer.{layer}.")] = state[key]
    state["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.randn(30, HIDDEN, generator=gen)
    _bert_layer(state, "text_decoder.bert.encoder.layer.0", gen, self_attention=True)
    state["text_decoder.cls.predictions.bias"] = torch.zeros(30)
    return state


def _lora(state: dict, name: str, out: int, inp: int, gen: torch.Generator, groups: int = 1) -> None:
    state[f"{name}.lora_A"] = torch.randn(RANK * groups, inp, generator=gen) * 0.3
    state[f"{name}.lora_B"] = torch.randn(out * groups, RANK, generator=gen) * 0.3


def dape_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A DAPE file of the tiny RAM: every LoRA tensor of RAM-LoRA, all non-zero."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for stage, depth in enumerate(DEPTHS):
        dim = EMBED * 2**stage
        for block in range(depth):
            _lora(state, f"visual_encoder.layers.{stage}.blocks.{block}.attn.qkv", dim, dim, gen, groups=2)
    bert = [(f"tagging_head.encoder.layer.{k}", ["crossattention"]) for k in range(LAYERS)]
    bert += [(f"tag_encoder.encoder.layer.{k}", ["attention", "crossattention"]) for k in range(TAG_ENCODER_LAYERS)]
    bert += [("text_decoder.bert.encoder.layer.0", ["attention", "crossattention"])]
    for name, parts in bert:
        for part in parts:
            _lora(state, f"{name}.{part}.self.query", HIDDEN, HIDDEN, gen)
            _lora(state, f"{name}.{part}.self.key", HIDDEN, WIDTH if part == "crossattention" else HIDDEN, gen)
    return state


def build_tiny_ram(
    folder: Path, *, seed: int = 0, thresholds: list[float] | None = None, vision_multi: bool = False
) -> TinyRam:
    """Write ``ram.pth``, ``dape.pth``, ``ram_tag_list.txt`` and its thresholds into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = ram_state(seed)
    if vision_multi:  # an older RAM name of the tagging head, which RAM's loader renames
        state = {key.replace("tagging_head.", "vision_multi.", 1): value for key, value in state.items()}
    torch.save({"model": state}, folder / "ram.pth")
    torch.save(dape_state(seed + 1), folder / "dape.pth")
    (folder / "ram_tag_list.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    values = thresholds if thresholds is not None else [0.68] * len(TAGS)
    (folder / "ram_tag_list_threshold.txt").write_text("".join(f"{v}\n" for v in values), encoding="utf-8")
    return TinyRam(
        folder / "ram.pth", folder / "dape.pth", folder / "ram_tag_list.txt", folder / "ram_tag_list_threshold.txt"
    )
