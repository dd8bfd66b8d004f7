"""RAM's image encoder: a Swin Transformer whose parameter names are RAM's checkpoint keys.

Written from the architecture (Liu et al. 2021, "Swin Transformer") as RAM configures it
(``ram/models/swin_transformer*.py`` and ``ram/configs/swin/config_swinL_384.json`` in the
official repositories): patch embedding with a LayerNorm, stages of window attention with
a learned relative-position bias, every second block shifted by half a window, a patch
merging between stages, a final LayerNorm, and the output ``[mean token, tokens]``.

The order of operations follows RAM's code where it decides the float result (``q`` is
scaled before ``q @ kᵀ``, the shifted-window mask is -100, the mean token comes from an
adaptive average pool), so the fp32 and fp16 results are those of the official tagger.
A stage whose feature map is not larger than the window uses one window the size of the
map and no shift, as RAM's blocks do (Swin-L at 384 px: its last stage, 12x12).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: ``nn.LayerNorm``'s default, which RAM's Swin uses everywhere.
SWIN_LAYER_NORM_EPS = 1e-5
#: What RAM's shifted-window mask adds between tokens of different regions.
MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    """Sizes of the encoder; the defaults are RAM's Swin-L at 384 px (``config_swinL_384.json``)."""

    image_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: int = 4

    @property
    def num_features(self) -> int:
        """The width of the last stage (1536 for Swin-L): RAM's ``vision_width``."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def resolution(self, stage: int) -> int:
        """The side of stage ``stage``'s feature map, in tokens."""
        return self.image_size // self.patch_size // 2**stage

    def stage_window(self, stage: int) -> tuple[int, int]:
        """``(window, shift)`` of the shifted blocks of ``stage``: RAM's rule for small maps."""
        side = self.resolution(stage)
        if side <= self.window_size:
            return side, 0
        return self.window_size, self.window_size // 2


def relative_position_index(window: int) -> torch.Tensor:
    """For each pair of tokens in a window, its row in the relative-position bias table."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # 2, N
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N, each in [0, 2w-2]
    return delta[0] * (2 * window - 1) + delta[1]


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * windows, window², C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def from_windows(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`to_windows`: ``[B * windows, window², C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(side: int, window: int, shift: int) -> torch.Tensor:
    """``[windows, N, N]``: 0 between tokens of the same region of the rolled map, -100 otherwise."""
    regions = torch.zeros(1, side, side, 1)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            regions[:, rows, cols, :] = label
            label += 1
    labels = to_windows(regions, window).squeeze(-1)  # windows, N
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a relative-position bias per head."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        index: torch.Tensor = self.relative_position_index  # type: ignore[assignment]
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = q @ k.transpose(-2, -1) + bias.unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """LayerNorm, (shifted) window attention, residual; LayerNorm, MLP, residual."""

    def __init__(self, dim: int, side: int, heads: int, window: int, shift: int, mlp_ratio: int) -> None:
        super().__init__()
        self.side, self.window, self.shift = side, window, shift
        self.norm1 = nn.LayerNorm(dim, eps=SWIN_LAYER_NORM_EPS)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim, eps=SWIN_LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        mask = shifted_window_mask(side, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        side = self.side
        shortcut = x
        x = self.norm1(x).view(b, side, side, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(to_windows(x, self.window), self.attn_mask)
        x = from_windows(windows, self.window, side, side)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Each 2x2 group of tokens -> one token of twice the width."""

    def __init__(self, dim: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.norm = nn.LayerNorm(4 * dim, eps=SWIN_LAYER_NORM_EPS)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.side, self.side, c)
        # RAM's order of the four neighbours: (even, even), (odd, even), (even, odd), (odd, odd)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, config: SwinConfig, stage: int) -> None:
        super().__init__()
        dim = config.embed_dim * 2**stage
        side = config.resolution(stage)
        window, shift = config.stage_window(stage)
        heads = config.num_heads[stage]
        self.blocks = nn.ModuleList(
            SwinBlock(dim, side, heads, window, shift if index % 2 else 0, config.mlp_ratio)
            for index in range(config.depths[stage])
        )
        last = stage == len(config.depths) - 1
        self.downsample = None if last else PatchMerging(dim, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.norm = nn.LayerNorm(config.embed_dim, eps=SWIN_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinEncoder(nn.Module):
    """``[B, 3, S, S]`` normalised pixels -> ``[B, 1 + tokens, num_features]`` (mean token first)."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.layers = nn.ModuleList(SwinStage(config, stage) for stage in range(len(config.depths)))
        self.norm = nn.LayerNorm(config.num_features, eps=SWIN_LAYER_NORM_EPS)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        mean = F.adaptive_avg_pool1d(x.transpose(1, 2), 1).transpose(1, 2)
        return torch.cat([mean, x], dim=1)
