"""Run an ncnn model through the ``ncnn`` PyPI runtime on the CPU.

This is the reference our PyTorch conversion is checked against (tests) and the
baseline our speed is measured against (``bench/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chainzoom.errors import ChainZoomError


class NcnnModel:
    """An ncnn network on the CPU: ``[3,H,W]`` float in ``[0,1]`` -> ``[3,sH,sW]``."""

    def __init__(self, param: Path, weights: Path, threads: int | None = None) -> None:
        try:
            import ncnn
        except ImportError as exc:
            raise ChainZoomError("the ncnn runtime needs: pip install 'chainzoom[ncnn]'") from exc
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        if threads:
            self.net.opt.num_threads = threads
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ChainZoomError(f"ncnn could not load {param} / {weights}")
        self._ncnn = ncnn

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(image.numpy(), dtype=np.float32)
        with self.net.create_extractor() as extractor:
            extractor.input("data", self._ncnn.Mat(array))
            status, out = extractor.extract("output")
        if status != 0:
            raise ChainZoomError(f"ncnn failed with status {status}")
        return torch.from_numpy(np.array(out)).clamp_(0.0, 1.0)
