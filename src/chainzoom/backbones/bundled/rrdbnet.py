"""RRDBNet, the ESRGAN / Real-ESRGAN / RealSR generator, in plain PyTorch.

Written from the published architecture (Wang et al., ESRGAN 2018): a first
convolution, ``num_block`` residual-in-residual dense blocks, a trunk convolution
with a long skip, two nearest-neighbour 2x upsamplings each followed by a
convolution, and two output convolutions. Leaky ReLU slope 0.2 everywhere, residual
scaling 0.2. The module names follow the common ``conv_first / body / conv_body /
conv_up1 / conv_up2 / conv_hr / conv_last`` convention so state dicts from other
tools map onto it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual."""

    def __init__(self, num_feat: int, num_grow: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow, num_grow, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow, num_grow, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow, num_grow, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), LEAKY_SLOPE)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), LEAKY_SLOPE)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), LEAKY_SLOPE)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three residual dense blocks inside one more scaled residual."""

    def __init__(self, num_feat: int, num_grow: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """The 4x RRDBNet generator: ``[N, 3, H, W] -> [N, 3, 4H, 4W]``."""

    scale = 4

    def __init__(
        self, num_in: int = 3, num_out: int = 3, num_feat: int = 64, num_block: int = 23, num_grow: int = 32
    ) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(num_in, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE))

    def convolutions_in_graph_order(self) -> list[tuple[str, nn.Conv2d, bool]]:
        """Every convolution as ``(name, module, followed_by_leaky_relu)`` in execution order.

        This is the order in which exporters (ONNX -> ncnn) serialise the weights.
        """
        activated = {"conv1", "conv2", "conv3", "conv4", "conv_up1", "conv_up2", "conv_hr"}
        return [
            (name, module, name.rsplit(".", 1)[-1] in activated)
            for name, module in self.named_modules()
            if isinstance(module, nn.Conv2d)
        ]
