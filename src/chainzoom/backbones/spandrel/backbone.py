"""Any super-resolution model file that spandrel recognises, as a chain backbone.

``--backbone spandrel:models/4xNomos8k_span.safetensors`` loads the file's weights
(safetensors, or a pickled checkpoint in torch's ``weights_only`` mode only), lets
spandrel detect the architecture and its hyper-parameters from the state-dict keys,
and runs the model through spandrel's descriptor, which pads inputs to the model's
size requirements and crops the output back. The model's scale is the chain's step
factor: a 2x model zooms in 2x steps. Every problem with the file is one
:class:`~chainzoom.errors.ChainZoomError` line that names it.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chainzoom.backbones.base import Backbone, ModelCard, count_parameters
from chainzoom.backbones.spandrel.loader import EXCLUDED, SPANDREL_VERSION, excluded_match, import_spandrel, sr_registry
from chainzoom.errors import ChainZoomError
from chainzoom.io.digest import file_sha256
from chainzoom.runtime import Runtime, torch_dtype

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")

#: What a model of each non-SR spandrel purpose is, for the refusal message.
PURPOSES = {
    "Restoration": "a restoration model (denoising, deblurring, artefact removal)",
    "FaceSR": "a face-restoration model (for aligned face crops)",
    "SR": "a super-resolution model",
}


def summary(exc: BaseException) -> str:
    """An exception as one short line: its type and the first sentence of its message.

    torch's and safetensors' messages run to paragraphs of advice; the first sentence
    says what is wrong with the file.
    """
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    sentence = re.split(r"(?<=[.!?])\s+", text)[0]
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__


def pickle_failure(path: Path, exc: pickle.UnpicklingError) -> ChainZoomError:
    """The user's error for a pickle that torch's weights-only unpickler did not accept.

    torch wraps every failure of that unpickler in one message. One naming a GLOBAL
    is a refusal: the file would import code or a custom class. Anything else is a
    damaged file or not a checkpoint at all.
    """
    message = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return ChainZoomError(
            f"{path}: refused by torch's safe loader (weights_only=True): it refers to {found.group(1)}, "
            "which is code or a custom object, not plain weights; if you trust the file, re-save its state "
            "dict as .safetensors"
        )
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    reason = detail.group(1).strip() if detail else summary(exc)
    return ChainZoomError(f"{path}: not a readable PyTorch checkpoint ({reason})")


def read_weights(path: Path) -> dict[str, Any]:
    """Read a model file into a dict, without ever running code stored in it.

    ``.safetensors`` holds only tensors. ``.pth``/``.pt``/``.ckpt`` are pickles: they
    are read with ``torch.load(weights_only=True)``, which refuses anything but
    tensors, containers and primitive values. Any other failure to parse the file is
    the file's problem (truncated, corrupt, not a checkpoint), so it is reported, not
    raised as a bug.
    """
    if not path.is_file():
        raise ChainZoomError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ChainZoomError(f"{path}: unsupported model file type {suffix or '(none)'}; use {', '.join(SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # the Rust reader raises its own error type for every defect
            raise ChainZoomError(f"{path}: not a readable safetensors file ({summary(exc)})") from exc
    try:
        with warnings.catch_warnings():
            # torch warns, over two lines, before refusing a TorchScript archive: the error says it all
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise pickle_failure(path, exc) from exc
    except Exception as exc:  # truncated zip, bad pickle stream, TorchScript archive ...
        raise ChainZoomError(f"{path}: not a readable PyTorch checkpoint ({summary(exc)})") from exc
    if not isinstance(loaded, dict):
        raise ChainZoomError(f"{path}: holds a {type(loaded).__name__}, not a state dict of weights")
    return loaded


def state_dict_from(raw: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """spandrel's canonical state dict (unwrapped from ``params_ema``, ``state_dict`` ...)."""
    state_dict = import_spandrel().canonicalize_state_dict(raw)
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ChainZoomError(
                f"{path}: not a state dict of weights: entry {key!r} holds {type(value).__name__}, not a tensor"
            )
    return state_dict


def detect_model(state_dict: dict[str, torch.Tensor], path: Path) -> ImageModelDescriptor:
    """Detect and build the model, as ``ArchRegistry.load`` does, naming the file on failure.

    The loop is spandrel's own (first architecture whose detector matches, in the
    registry's detection order); doing it here lets a file that matches an
    architecture but does not fit it say which architecture it resembled.
    """
    support = next((s for s in sr_registry().architectures("detection") if s.detect(state_dict)), None)
    if support is None:
        excluded = excluded_match(state_dict)
        if excluded is not None:
            raise ChainZoomError(
                f"{path}: {EXCLUDED[excluded]} ({excluded}), not super-resolution; the chain needs a model that upscales"
            )
        keys = ", ".join(list(state_dict)[:3]) or "none"
        raise ChainZoomError(
            f"{path}: unknown architecture: spandrel {SPANDREL_VERSION} recognises none of its "
            f"{len(state_dict)} tensors (first keys: {keys})"
        )
    try:
        descriptor = support.architecture.load(state_dict)
    except Exception as exc:  # shapes or keys that the detected architecture cannot take
        raise ChainZoomError(
            f"{path}: looks like {support.architecture.name} but its weights do not load ({summary(exc)})"
        ) from exc
    if descriptor.purpose != "SR" or descriptor.scale < 2:
        what = PURPOSES[descriptor.purpose]
        raise ChainZoomError(
            f"{path}: {what} ({descriptor.architecture.name}, scale {descriptor.scale}), not one that upscales; "
            "the chain needs a super-resolution model of scale 2 or more"
        )
    return descriptor


def check_channels(descriptor: ImageModelDescriptor, path: Path) -> None:
    """Accept 1->1 (grey, run per RGB channel), 3->3/4 and 4->3/4 (RGBA; alpha in opaque, out dropped)."""
    n_in, n_out = descriptor.input_channels, descriptor.output_channels
    if (n_in == 1 and n_out == 1) or (n_in in (3, 4) and n_out in (3, 4)):
        return
    raise ChainZoomError(
        f"{path}: the model maps {n_in} channels to {n_out}; chainzoom runs grey (1->1), RGB or RGBA models"
    )


def check_precision(runtime: Runtime) -> torch.dtype:
    """The dtype to run in (``auto``: float32 on a CPU, where bf16 is not yet measured per
    architecture); half precision is for GPUs."""
    dtype = runtime.model_dtype()
    if dtype != "float32" and torch.device(runtime.device).type == "cpu":
        raise ChainZoomError(f"dtype {dtype} is for GPUs; on the CPU use auto or float32")
    return torch_dtype(dtype)


def check_dtype_support(descriptor: ImageModelDescriptor, dtype: torch.dtype, path: Path) -> None:
    """spandrel records per architecture whether half precision gives correct results."""
    supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    if not supported.get(dtype, True):
        name = str(dtype).removeprefix("torch.")
        raise ChainZoomError(
            f"{path}: {descriptor.architecture.name} does not run in {name} (spandrel marks it unsupported); "
            "use float32" + (" or bfloat16" if descriptor.supports_bfloat16 else "")
        )


class SpandrelBackbone(Backbone):
    """Runs a spandrel image descriptor on RGB float32 CPU images.

    A grey (1-channel) model runs on each of R, G and B separately: the model sees
    every channel at full detail, a grey input gives a grey output exactly, and no
    colour-space conversion is needed (the cost is three passes of a small model).
    A 4-channel model gets an opaque alpha channel; a 4-channel output loses its
    alpha. spandrel's call clamps the output to [0, 1].
    """

    def __init__(self, descriptor: ImageModelDescriptor, card: ModelCard, device: str, dtype: torch.dtype) -> None:
        self.descriptor = descriptor.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = descriptor.scale
        self._card = card

    def _run(self, image: torch.Tensor) -> torch.Tensor:
        return self.descriptor(image.unsqueeze(0))[0]

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        image = image.to(self.device, self.dtype)
        channels = self.descriptor.input_channels
        if channels == 1:
            out = torch.cat([self._run(image[c : c + 1]) for c in range(image.shape[0])])
        else:
            if channels == 4:
                image = torch.cat([image, torch.ones_like(image[:1])])
            out = self._run(image)[:3]
        return out.float().cpu()

    def card(self) -> ModelCard:
        return self._card


def load_spandrel(path: Path, runtime: Runtime) -> SpandrelBackbone:
    """Read, detect and check ``path``, and place the model on the runtime's device and dtype."""
    dtype = check_precision(runtime)
    descriptor = detect_model(state_dict_from(read_weights(path), path), path)
    check_channels(descriptor, path)
    check_dtype_support(descriptor, dtype, path)
    name = descriptor.architecture.name
    tags = f" ({', '.join(descriptor.tags)})" if descriptor.tags else ""
    card = ModelCard(
        id=f"spandrel:{path.name}",
        description=f"{name} {descriptor.scale}x super-resolution{tags}, loaded by spandrel",
        architecture=name,
        scale=descriptor.scale,
        parameters=count_parameters(descriptor.model),
        source=str(path),
        weights_sha256=file_sha256(path),
    )
    return SpandrelBackbone(descriptor, card, runtime.device, dtype)


def create_spandrel(argument: str | None, runtime: Runtime, **options: Any) -> Backbone:
    """The registry factory: ``spandrel:PATH`` (the model file; it takes no options)."""
    if options:
        raise ChainZoomError(f"backbone 'spandrel' takes no options, got {', '.join(sorted(options))}")
    if not argument:
        raise ChainZoomError("backbone 'spandrel' needs a model file: spandrel:PATH")
    return load_spandrel(Path(argument).expanduser(), runtime)
