"""LPIPS (VGG16, v0.1) as a training loss, without torchvision.

OSEDiff's reconstruction loss is ``lpips.LPIPS(net="vgg")``. That package builds its
VGG16 through torchvision, which this project does not install (it would replace the CPU
torch build). LPIPS is small: the first 30 layers of VGG16's ``features`` (five slices
ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), each slice's activations
unit-normalised over channels, squared differences weighted by a 1x1 "linear head" per
slice, averaged over space and summed. So the VGG16 is written here with torchvision's
module layout, and loads the torchvision weights file the user has
(``vgg16-397923af.pth``, keys ``features.N.weight``); the linear heads are the
``lpips`` package's own file (``lpips/weights/v0.1/vgg.pth``, install it with
``pip install --no-deps lpips==0.1.4``) or a file the user names. The layer widths are
read from the files, so a tiny VGG in the same layout loads too (the tests use one).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from chainzoom.errors import ChainZoomError

#: Indices in VGG16 ``features`` of the convolutions, and after which ReLU each slice ends.
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
SLICE_ENDS = (4, 9, 16, 23, 30)
POOLS = (4, 9, 16, 23)
#: LPIPS' input scaling (from ImageNet statistics, for inputs in [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
LPIPS_INSTALL = "pip install --no-deps lpips==0.1.4"


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features[:30]`` with the given conv widths (13 of them)."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        if len(widths) != len(VGG16_CONVS):
            raise ValueError(f"VGG16 has {len(VGG16_CONVS)} convolutions, got {len(widths)} widths")
        layers: list[nn.Module] = []
        channels = 3
        convs = iter(widths)
        for index in range(SLICE_ENDS[-1]):
            if index in VGG16_CONVS:
                width = next(convs)
                layers.append(nn.Conv2d(channels, width, 3, padding=1))
                channels = width
            elif index in POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)

    @property
    def slice_widths(self) -> tuple[int, ...]:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        ends = [sum(1 for i in VGG16_CONVS if i < end) - 1 for end in SLICE_ENDS]
        return tuple(convs[e].out_channels for e in ends)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in SLICE_ENDS:
            for index in range(start, end):
                x = self.features[index](x)
            outputs.append(x)
            start = end
        return outputs


class LPIPS(nn.Module):
    """The LPIPS distance between images in ``[-1, 1]``, one value per image; frozen."""

    def __init__(self, features: VGG16Features, heads: list[torch.Tensor]) -> None:
        super().__init__()
        widths = features.slice_widths
        if [h.shape[1] for h in heads] != list(widths):
            raise ChainZoomError(
                f"LPIPS heads are for layer widths {[h.shape[1] for h in heads]}, the VGG has {list(widths)}"
            )
        self.features = features
        self.heads = nn.ParameterList([nn.Parameter(h.clone(), requires_grad=False) for h in heads])
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.features((a - self.shift) / self.scale)
        fb = self.features((b - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for x, y, head in zip(fa, fb, self.heads):
            diff = (_unit(x) - _unit(y)) ** 2
            total = total + torch.nn.functional.conv2d(diff, head).mean(dim=(1, 2, 3))
        return total


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt((x**2).sum(dim=1, keepdim=True)) + eps)


def packaged_heads() -> Path:
    """The ``lpips`` package's VGG linear heads, found without importing it (it imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ChainZoomError(
            f"the LPIPS loss needs the lpips package's linear heads: {LPIPS_INSTALL}, or --lpips-heads"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"


def _load(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ChainZoomError(f"{what} {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that is not plain tensors, or not a torch file at all
        raise ChainZoomError(f"{what} {path} is not a torch weights file: {' '.join(str(exc).split())[:200]}") from exc
    if not isinstance(data, dict):
        raise ChainZoomError(f"{what} {path} is not a state dict")
    return data


def load_lpips(vgg: str | Path | None, heads: str | Path | None = None) -> LPIPS:
    """LPIPS from a torchvision VGG16 weights file and the linear heads (see the module docstring)."""
    if vgg is None:
        raise ChainZoomError(
            "the LPIPS loss needs VGG16 weights: --vgg PATH (torchvision's vgg16-397923af.pth), or --loss ...,lpips=0"
        )
    state = _load(Path(vgg), "VGG16 weights (--vgg)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        widths = tuple(int(state[f"features.{i}.weight"].shape[0]) for i in VGG16_CONVS)
        features = VGG16Features(widths)
        features.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=False)
        missing = [k for k in features.state_dict() if k not in state]
    except (KeyError, RuntimeError) as exc:
        raise ChainZoomError(f"--vgg {vgg} is not a torchvision VGG16 state dict ({exc})") from None
    if missing:
        raise ChainZoomError(f"--vgg {vgg} lacks {', '.join(missing[:3])}: not a torchvision VGG16 state dict")
    head_state = _load(Path(heads) if heads is not None else packaged_heads(), "LPIPS heads")
    try:
        head_list = [head_state[f"lin{i}.model.1.weight"].float() for i in range(len(SLICE_ENDS))]
    except KeyError:
        raise ChainZoomError("LPIPS heads file lacks lin0..lin4.model.1.weight: not lpips' vgg.pth") from None
    return LPIPS(features, head_list)
