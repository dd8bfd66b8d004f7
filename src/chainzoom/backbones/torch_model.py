"""A Backbone around any PyTorch image-to-image SR module."""

from __future__ import annotations

import torch
from torch import nn

from chainzoom.backbones.base import Backbone, ModelCard


class TorchBackbone(Backbone):
    """Runs an ``nn.Module`` mapping ``[N,3,H,W] -> [N,3,sH,sW]`` in ``[0,1]``.

    Inference runs under ``torch.inference_mode`` on the module's device and dtype,
    in channels-last memory layout (measured faster for RRDBNet: 0.43x the time of
    the default layout at float16 on an H100, and faster on the CPU too; see
    docs/performance.md). Images come and go as float32 CPU tensors so the chain
    never sees devices.
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
    ) -> None:
        # Module.to takes memory_format at run time, but torch's overloads leave it out
        self.model: nn.Module = model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model.requires_grad_(False)
        # torch.compile pays tens of seconds once per input shape (a chain has one crop
        # shape) and then runs about 8% faster on the CPU: worth it for long jobs only.
        self.forward = torch.compile(self.model) if compile else self.model
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = card.scale
        self._card = card

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        with torch.inference_mode():
            batch = image.unsqueeze(0).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
            out = self.forward(batch)[0]
            return out.float().clamp_(0.0, 1.0).cpu()

    def card(self) -> ModelCard:
        return self._card
