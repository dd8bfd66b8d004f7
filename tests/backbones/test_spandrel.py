"""The spandrel backbone: tiny random models of several architectures, saved, loaded back, run.

Models are built with spandrel's own architecture classes at minimal sizes, saved as
``.safetensors`` and ``.pth`` (wrapped as BasicSR does, ``{"params_ema": ...}``),
and loaded back through ``create_spandrel(PATH, Runtime(device="cpu"))``. Every refusal of a
bad file is checked for its one-line message.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

if importlib.util.find_spec("spandrel") is None:
    pytest.skip("spandrel is not installed (pip install --no-deps spandrel==0.4.2)", allow_module_level=True)

from safetensors.torch import save_file

from chainzoom.backbones.spandrel.backbone import (
    check_dtype_support,
    create_spandrel,
    detect_model,
    pickle_failure,
)
from chainzoom.backbones.spandrel.loader import (
    EXCLUDED,
    import_spandrel,
    real_torchvision_available,
    sr_registry,
    torchvision_stand_in,
)
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime

#: Decided from the installed distributions, not from ``sys.modules``, which the code under test touches.
TORCHVISION_INSTALLED = any(d.metadata["Name"] == "torchvision" for d in importlib.metadata.distributions())
no_real_torchvision = pytest.mark.skipif(TORCHVISION_INSTALLED, reason="a real torchvision is installed: no stand-in")

SIZE = (16, 20)  # at least the 16 px minimum of the tiny SwinIR/DAT, so spandrel adds no padding


def arch(module: str, name: str) -> type[nn.Module]:
    import_spandrel()
    return getattr(importlib.import_module(f"spandrel.architectures.{module}"), name)


def span() -> nn.Module:
    model = arch("SPAN", "SPAN")(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4)
    with torch.no_grad():  # random SPAN outputs are mostly far outside [0, 1]; shrink them
        model.upsampler[0].weight.mul_(1e-3)
    return model


@dataclass(frozen=True)
class Tiny:
    architecture: str
    scale: int
    channels: int
    build: Callable[[], nn.Module]


TINY = {
    "esrgan": Tiny(
        "ESRGAN", 4, 3, lambda: arch("ESRGAN", "ESRGAN")(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    ),
    "span": Tiny("SPAN", 4, 3, span),
    "swinir": Tiny(
        "SwinIR",
        2,
        3,
        lambda: arch("SwinIR", "SwinIR")(
            img_size=16,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffle",
        ),
    ),
    "dat": Tiny(
        "DAT",
        2,
        3,
        lambda: arch("DAT", "DAT")(
            img_size=16, embed_dim=16, split_size=[2, 4], depth=[1], num_heads=[2], expansion_factor=2.0, upscale=2
        ),
    ),
    "compact": Tiny("RealESRGAN Compact", 2, 3, lambda: arch("Compact", "Compact")(num_feat=8, num_conv=2, upscale=2)),
    "compact-grey": Tiny(
        "RealESRGAN Compact",
        4,
        1,
        lambda: arch("Compact", "Compact")(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=4),
    ),
    "compact-rgba": Tiny(
        "RealESRGAN Compact",
        4,
        4,
        lambda: arch("Compact", "Compact")(num_in_ch=4, num_out_ch=4, num_feat=8, num_conv=2, upscale=4),
    ),
}


def save(state_dict: dict, path: Path) -> Path:
    """Save as a real-world file of that type: bare safetensors, BasicSR .pth, Lightning .ckpt."""
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    elif path.suffix == ".pth":
        torch.save({"params_ema": state_dict}, path)
    else:
        torch.save({"state_dict": state_dict, "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[nn.Module, Path]]:
    """``models(name, suffix)`` -> the eval-mode module and its saved file, built once per module."""
    folder = tmp_path_factory.mktemp("spandrel")
    cache: dict[str, nn.Module] = {}

    def get(name: str, suffix: str = ".safetensors") -> tuple[nn.Module, Path]:
        if name not in cache:
            torch.manual_seed(len(cache))
            cache[name] = TINY[name].build().eval()
        path = folder / f"{name}{suffix}"
        if not path.exists():
            save(cache[name].state_dict(), path)
        return cache[name], path

    return get


def direct(module: nn.Module, image: torch.Tensor, channels: int) -> torch.Tensor:
    """The module's own output for an RGB image, fed the way the backbone documents."""
    with torch.no_grad():
        if channels == 1:
            return torch.cat([module(image[c : c + 1][None])[0] for c in range(3)]).clamp(0, 1)
        if channels == 4:
            image = torch.cat([image, torch.ones_like(image[:1])])
        return module(image[None])[0, :3].clamp(0, 1)


# --- importing spandrel without torchvision -------------------------------------------------


@no_real_torchvision
def test_import_leaves_no_torchvision_behind() -> None:
    spandrel = import_spandrel()
    assert spandrel.__version__ == "0.4.2"
    assert not real_torchvision_available()
    assert not any(name.split(".")[0] == "torchvision" for name in sys.modules)
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401


@no_real_torchvision
def test_stand_in_functions_fail_loudly_and_enum_is_real() -> None:
    import_spandrel()
    lama = importlib.import_module("spandrel.architectures.LaMa.__arch.LaMa")
    restoreformer = importlib.import_module("spandrel.architectures.RestoreFormer")
    assert lama.InterpolationMode.BILINEAR.value == "bilinear"
    with pytest.raises(ChainZoomError, match="rotate is not available.*LaMa and RestoreFormer"):
        lama.rotate(torch.zeros(1, 3, 4, 4), 10.0)
    with pytest.raises(ChainZoomError, match="normalize is not available"):
        restoreformer.tv_normalize(torch.zeros(3, 4, 4), [0.5] * 3, [0.5] * 3)


def test_registry_is_main_registry_minus_excluded_in_order() -> None:
    spandrel = import_spandrel()
    main = [s.architecture.id for s in spandrel.MAIN_REGISTRY.architectures("detection")]
    ours = [s.architecture.id for s in sr_registry().architectures("detection")]
    assert set(EXCLUDED) == {"LaMa", "RestoreFormer"}
    assert ours == [i for i in main if i not in EXCLUDED]
    assert len(ours) == len(main) - 2


def test_stand_in_never_hides_an_imported_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(RuntimeError, match="already imported"), torchvision_stand_in():
        pass
    assert sys.modules["torchvision"] is None


def test_broken_torchvision_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenTorchvision:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "torchvision":
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenTorchvision(), *sys.meta_path])
    with pytest.raises(ChainZoomError, match=r"torchvision is installed but does not import \(operator"):
        real_torchvision_available()


# --- loading and running ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", list(TINY))
def test_round_trip_detects_and_matches_the_module(models, name: str, suffix: str) -> None:
    tiny = TINY[name]
    module, path = models(name, suffix)
    backbone = create_spandrel(str(path), Runtime(device="cpu"))
    card = backbone.card()
    assert (card.architecture, card.scale, backbone.scale) == (tiny.architecture, tiny.scale, tiny.scale)
    image = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(1))
    out = backbone.upscale(image)
    assert out.shape == (3, SIZE[0] * tiny.scale, SIZE[1] * tiny.scale)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    expected = direct(module, image, tiny.channels)
    assert ((expected > 0) & (expected < 1)).float().mean() > 0.3  # the comparison is not all clamped
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_grey_model_gives_grey_for_grey(models) -> None:
    _, path = models("compact-grey")
    grey = torch.rand(1, 12, 12).expand(3, -1, -1)
    out = create_spandrel(str(path), Runtime(device="cpu")).upscale(grey)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_lightning_checkpoint_and_small_input_padding(models) -> None:
    _, path = models("swinir", ".ckpt")
    backbone = create_spandrel(str(path), Runtime(device="cpu"))
    assert backbone.upscale(torch.rand(3, 9, 13)).shape == (3, 18, 26)  # padded to 16 px, cropped back


def test_card(models) -> None:
    module, path = models("esrgan")
    card = create_spandrel(str(path), Runtime(device="cpu")).card()
    assert card.id == "spandrel:esrgan.safetensors"
    assert card.source == str(path)
    assert card.parameters == sum(p.numel() for p in module.parameters())
    assert card.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card.text_aware is False and card.licence is None
    assert "ESRGAN 4x super-resolution (8nf, 1nb)" in card.description


def test_registry_spec_reaches_the_factory(models) -> None:
    """The backbone registry resolves ``--backbone spandrel:PATH`` to the file's model."""
    from chainzoom.backbones import BACKBONES

    _, path = models("compact")
    assert BACKBONES.create(f"spandrel:{path}", Runtime(device="cpu")).card().id == "spandrel:compact.safetensors"
    with pytest.raises(ChainZoomError, match="'spandrel' needs an argument: spandrel:PATH"):
        BACKBONES.create("spandrel", Runtime(device="cpu"))


def test_chain_steps_at_the_model_scale(models) -> None:
    from chainzoom.api import zoom

    _, path = models("compact")
    backbone = create_spandrel(str(path), Runtime(device="cpu"))
    states = zoom(torch.rand(3, 32, 32), scale=4, backbone=backbone)
    assert len(states) == 3  # two 2x steps, not one 4x step
    assert [s.magnification for s in states] == [1, 2, 4]
    assert all(s.image.shape == (3, 32, 32) for s in states)


# --- refusals -----------------------------------------------------------------------------------


def refused(path: Path, match: str, runtime: Runtime | None = None) -> None:
    with pytest.raises(ChainZoomError, match=match) as caught:
        create_spandrel(str(path), runtime or Runtime(device="cpu"))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


def test_missing_file_and_wrong_type(tmp_path: Path) -> None:
    refused(tmp_path / "nope.safetensors", "model file not found")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    refused(onnx, r"unsupported model file type \.onnx")


def test_truncated_and_corrupt_files(models, tmp_path: Path) -> None:
    for suffix, message in (
        (".safetensors", "not a readable safetensors file"),
        (".pth", "not a readable PyTorch checkpoint"),
    ):
        data = models("esrgan", suffix)[1].read_bytes()
        truncated = tmp_path / f"truncated{suffix}"
        truncated.write_bytes(data[: len(data) // 2])
        refused(truncated, message)
        garbage = tmp_path / f"garbage{suffix}"
        garbage.write_bytes(b"not a model at all")
        refused(garbage, message)
    refused(garbage, r"not a readable PyTorch checkpoint \(Unsupported operand 110\)")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    refused(empty, r"not a readable PyTorch checkpoint \(EOFError\)")


class Payload:
    """Unpickling this runs a shell command: the safe loader must refuse before that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


class TrainingConfig:
    """A custom class pickled next to the weights, as training scripts often do."""

    lr = 1e-4


def test_unsafe_pickles_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, evil)
    refused(evil, r"refused by torch's safe loader \(weights_only=True\): it refers to (posix|nt)\.system")
    assert not marker.exists()
    custom = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "config": TrainingConfig()}, custom)
    refused(custom, r"it refers to [\w.]*TrainingConfig, which is code or a custom object")


def test_pickle_failure_without_details() -> None:
    error = pickle_failure(Path("m.pth"), pickle.UnpicklingError("Weights only load failed."))
    assert str(error) == "m.pth: not a readable PyTorch checkpoint (UnpicklingError: Weights only load failed.)"


def test_not_a_state_dict(tmp_path: Path) -> None:
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    refused(listed, "holds a list, not a state dict")
    mixed = tmp_path / "mixed.pth"
    torch.save({"conv.weight": torch.zeros(1), "epoch": 3}, mixed)
    refused(mixed, "entry 'epoch' holds int, not a tensor")


def test_unknown_architecture(tmp_path: Path) -> None:
    path = save({f"random.{i}.weight": torch.rand(4, 4) for i in range(5)}, tmp_path / "random.safetensors")
    refused(path, r"unknown architecture: spandrel 0\.4\.2 recognises none of its 5 tensors \(first keys: random\.0")


def test_detected_but_weights_do_not_fit(models, tmp_path: Path) -> None:
    module, _ = models("esrgan")
    state_dict = dict(module.state_dict())
    name = next(k for k in state_dict if k.endswith(".weight") and state_dict[k].ndim == 4 and k != "model.0.weight")
    state_dict[name] = torch.zeros(3, 3, 3, 3)
    refused(
        save(state_dict, tmp_path / "broken.safetensors"),
        rf"looks like ESRGAN but its weights do not load \(RuntimeError: Error\(s\) in loading state_dict for RRDBNet: "
        rf"size mismatch for {re.escape(name)}: copying a param with shape torch.Size\(\[3, 3, 3, 3\]\)",
    )


def test_non_sr_models_are_refused_and_named(tmp_path: Path) -> None:
    dncnn = arch("DnCNN", "DnCNN")(in_nc=3, out_nc=3, nc=8, nb=4)
    refused(
        save(dncnn.state_dict(), tmp_path / "dncnn.pth"),
        r"a restoration model \(denoising, deblurring, artefact removal\) \(DnCNN, scale 1\), not one that upscales",
    )
    compact1 = arch("Compact", "Compact")(num_feat=8, num_conv=2, upscale=1)
    refused(save(compact1.state_dict(), tmp_path / "compact1x.safetensors"), r"\(RealESRGAN Compact, scale 1\)")


def test_excluded_architectures_are_named(tmp_path: Path) -> None:
    with torch.device("meta"):  # LaMa is 27M parameters; detection reads only the keys
        keys = list(arch("LaMa", "LaMa")().state_dict())
    path = save({k: torch.zeros(1) for k in keys}, tmp_path / "lama.safetensors")
    refused(path, r"an inpainting model \(LaMa\), not super-resolution")


def test_unsupported_channel_counts(tmp_path: Path) -> None:
    model = arch("Compact", "Compact")(num_in_ch=2, num_out_ch=2, num_feat=8, num_conv=2, upscale=4)
    refused(save(model.state_dict(), tmp_path / "two.safetensors"), "maps 2 channels to 2; chainzoom runs grey")


def test_precision_checks_come_before_reading_the_file(tmp_path: Path) -> None:
    never_read = tmp_path / "missing.safetensors"
    for dtype, match in (
        ("float16", "dtype float16 is for GPUs; on the CPU use auto or float32"),
        ("bfloat16", "dtype bfloat16 is for GPUs"),
        ("float64", "dtype: must be one of auto, float32, float16, bfloat16, got 'float64'"),
    ):
        with pytest.raises(ChainZoomError, match=match):
            create_spandrel(str(never_read), Runtime(device="cpu", dtype=dtype))


def test_half_support_comes_from_the_descriptor(models) -> None:
    module, path = models("dat")
    descriptor = detect_model(module.state_dict(), path)
    assert not descriptor.supports_half and descriptor.supports_bfloat16
    with pytest.raises(ChainZoomError, match="DAT does not run in float16.*use float32 or bfloat16"):
        check_dtype_support(descriptor, torch.float16, path)
    check_dtype_support(descriptor, torch.bfloat16, path)


def test_factory_arguments() -> None:
    with pytest.raises(ChainZoomError, match="needs a model file: spandrel:PATH"):
        create_spandrel(None, Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="takes no options, got color_fix"):
        create_spandrel("x.safetensors", Runtime(device="cpu"), color_fix="wavelet")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(models, dtype: str) -> None:
    _, path = models("compact")
    image = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(2))
    expected = create_spandrel(str(path), Runtime(device="cpu")).upscale(image)
    out = create_spandrel(str(path), Runtime(device="cuda", dtype=dtype)).upscale(image)
    assert out.device.type == "cpu" and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol={"float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}[dtype])


def test_a_torchscript_file_is_refused_in_one_line_without_torch_warnings(tmp_path: Path, capsys) -> None:
    """torch printed two warning lines before the (right) error for a TorchScript archive."""
    from chainzoom.cli import main

    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 3))
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    args = ["zoom", "assets/sample.jpg", "--backbone", f"spandrel:{path}", "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"chainzoom: error: {path}: not a readable PyTorch checkpoint")
