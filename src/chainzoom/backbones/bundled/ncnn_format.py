"""Read ncnn model files (``.param`` text graph + ``.bin`` weights) without the ncnn runtime.

Facts of the format used here (ncnn's ``ModelBin``): layers are listed in the
``.param`` file in execution order; the ``.bin`` file holds, for each layer that
has weights and in that order, its weight blob and then its bias blob. A weight
blob starts with a 4-byte tag: ``0x01306B47`` means float16 values follow, ``0``
means float32. The bias is stored untagged, as float32. A ``Convolution`` layer's
parameters are ``0`` = output channels, ``1`` = kernel size, ``5`` = has bias,
``6`` = weight count, ``9`` = activation type (2 = leaky ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chainzoom.errors import ChainZoomError

PARAM_MAGIC = "7767517"
TAG_FLOAT16 = 0x01306B47
TAG_FLOAT32 = 0x00000000
ACTIVATION_LEAKY_RELU = 2


@dataclass(frozen=True)
class NcnnLayer:
    kind: str
    name: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NcnnConvolution:
    """One convolution's weights, shaped as PyTorch expects ``[out, in, k, k]``."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    leaky_relu: bool


def read_param(path: Path) -> list[NcnnLayer]:
    """Parse an ncnn ``.param`` file into its layers, in execution order."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise ChainZoomError(f"{path} is not an ncnn .param file (missing magic {PARAM_MAGIC})")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        kind, name = parts[0], parts[1]
        n_in, n_out = int(parts[2]), int(parts[3])
        params = dict(item.split("=", 1) for item in parts[4 + n_in + n_out :])
        layers.append(NcnnLayer(kind, name, params))
    return layers


def read_convolutions(param_path: Path, bin_path: Path) -> list[NcnnConvolution]:
    """All convolution weights of an ncnn model whose only weighted layers are convolutions."""
    layers = read_param(param_path)
    weighted = {layer.kind for layer in layers} & {"InnerProduct", "Deconvolution", "ConvolutionDepthWise"}
    if weighted:
        raise ChainZoomError(f"{param_path}: unsupported ncnn layer types {sorted(weighted)}")
    data = Path(bin_path).read_bytes()
    try:
        convolutions, offset = _read_blobs(layers, data, bin_path)
    except (ValueError, KeyError) as exc:
        raise ChainZoomError(
            f"{bin_path}: cannot read the weights ({exc}): the file is truncated or not an ncnn .bin"
        ) from None
    if offset != len(data):
        raise ChainZoomError(
            f"{bin_path}: {len(data) - offset} bytes left after reading every convolution "
            "(the .bin does not belong to this .param)"
        )
    return convolutions


def _read_blobs(layers: list[NcnnLayer], data: bytes, bin_path: Path) -> tuple[list[NcnnConvolution], int]:
    offset = 0
    convolutions = []
    for layer in (layer for layer in layers if layer.kind == "Convolution"):
        out_ch, kernel = int(layer.params["0"]), int(layer.params["1"])
        count = int(layer.params["6"])
        tag = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if tag == TAG_FLOAT16:
            weight = np.frombuffer(data, np.float16, count, offset).astype(np.float32)
            offset += _aligned(count * 2)
        elif tag == TAG_FLOAT32:
            weight = np.frombuffer(data, np.float32, count, offset).copy()
            offset += count * 4
        else:
            raise ChainZoomError(f"{bin_path}: unsupported ncnn weight tag {tag:#x} in {layer.name}")
        bias = None
        if layer.params.get("5", "0") == "1":
            bias = np.frombuffer(data, np.float32, out_ch, offset).copy()
            offset += out_ch * 4
        in_ch = count // (out_ch * kernel * kernel)
        convolutions.append(
            NcnnConvolution(
                layer.name,
                weight.reshape(out_ch, in_ch, kernel, kernel),
                bias,
                layer.params.get("9") == str(ACTIVATION_LEAKY_RELU),
            )
        )
    return convolutions, offset


def _aligned(nbytes: int) -> int:
    """ncnn pads float16 blobs to a multiple of 4 bytes."""
    return (nbytes + 3) // 4 * 4
