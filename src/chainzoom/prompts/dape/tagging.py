"""RAM's tagging head and the whole tagger, with RAM's checkpoint keys as parameter names.

RAM (Zhang et al. 2023, "Recognize Anything") recognises tags Query2Label style: one
learned embedding per tag (``label_embed``, 512 wide) is projected to the head's width
(``wordvec_proj``, then ReLU) and used as the queries of a small BERT whose layers keep
only their cross-attention to the image tokens and their feed-forward part (RAM deletes
the self-attention: ``del_selfattention`` in ``ram/models/ram*.py``). ``fc`` turns each
query into one logit; a tag fires when ``sigmoid(logit)`` exceeds that tag's threshold.
The image tokens are the Swin output projected to 512 (``image_proj``).

Sizes are RAM's ``q2l_config.json`` with ``encoder_width`` set to 512 in code: 2 layers,
hidden 768, **4 heads**, feed-forward 3072, LayerNorm eps 1e-12, exact GELU. The number
of heads is not visible in any tensor shape, so it is a parameter, not read from a file.
As in BERT, attention scores are divided by ``sqrt(head width)`` after ``q @ kᵀ``; the
all-ones image mask RAM passes adds exactly zero, so it is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from chainzoom.prompts.dape.swin import SwinConfig, SwinEncoder

#: ``layer_norm_eps`` of RAM's ``q2l_config.json``.
BERT_LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of the tagging head; the defaults are RAM's (``q2l_config.json``, 4585 tags)."""

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 3072
    #: The width of ``label_embed`` and of the projected image tokens (512 in RAM's code).
    embed_width: int = 512
    num_classes: int = 4585


@dataclass(frozen=True)
class RamConfig:
    """The whole tagger: the image encoder and the tagging head."""

    swin: SwinConfig = field(default_factory=SwinConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


class CrossSelf(nn.Module):
    """Queries from the tags, keys and values from the image tokens."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.heads = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.embed_width, config.hidden_size)
        self.value = nn.Linear(config.embed_width, config.hidden_size)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)

    def forward(self, tags: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.query(tags)), self.split(self.key(image)), self.split(self.value(image))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        context = scores.softmax(dim=-1) @ v
        b, _, n, _ = context.shape
        return context.permute(0, 2, 1, 3).reshape(b, n, -1)


class DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BERT's output sub-layer."""

    def __init__(self, width_in: int, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=BERT_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class CrossAttention(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.add_module("self", CrossSelf(config))
        self.output = DenseNorm(config.hidden_size, config.hidden_size)

    def forward(self, tags: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        attend: CrossSelf = self._modules["self"]  # type: ignore[assignment]
        return self.output(attend(tags, image), tags)


class Intermediate(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class TaggingLayer(nn.Module):
    """A BERT layer in RAM's ``mode='tagging'``: cross-attention, then feed-forward."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.crossattention = CrossAttention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size)

    def forward(self, tags: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        attended = self.crossattention(tags, image)
        return self.output(self.intermediate(attended), attended)


class TaggingEncoder(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(TaggingLayer(config) for _ in range(config.num_layers))


class TaggingHead(nn.Module):
    """Named like RAM's ``tagging_head`` (a BertModel without embeddings and self-attention)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.encoder = TaggingEncoder(config)

    def forward(self, tags: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            tags = layer(tags, image)
        return tags


class RamTagger(nn.Module):
    """Normalised ``[B, 3, S, S]`` pixels -> ``[B, num_classes]`` tag logits."""

    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.config = config
        head = config.head
        self.visual_encoder = SwinEncoder(config.swin)
        self.image_proj = nn.Linear(config.swin.num_features, head.embed_width)
        self.label_embed = nn.Parameter(torch.zeros(head.num_classes, head.embed_width))
        # RAM projects the 512-wide tag embeddings only when the head is of another width
        self.wordvec_proj: nn.Module = (
            nn.Identity() if head.hidden_size == head.embed_width else nn.Linear(head.embed_width, head.hidden_size)
        )
        self.tagging_head = TaggingHead(head)
        self.fc = nn.Linear(head.hidden_size, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(self.visual_encoder(pixels))
        tags = F.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).repeat(pixels.shape[0], 1, 1)
        return self.fc(self.tagging_head(tags, image)).squeeze(-1)
