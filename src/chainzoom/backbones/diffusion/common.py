"""What the one-step diffusion SR backbones (OSEDiff on SD3 and on SD 2.1) share.

One step, as the official inference code does it (and as :class:`OneStepDiffusionSR`
runs it for every family):

1. the input view is upscaled 4x with bicubic (Pillow's, as the official scripts) to
   the output size and mapped to ``[-1, 1]``;
2. the VAE encoder (with its LoRA) encodes it; the latent is a **sample** of the
   posterior times the VAE's scaling factor, with no shift subtracted (the official
   inference; its training code does subtract the SD3 shift: a train/test mismatch
   kept for parity with the released weights). The sample's noise comes from a
   generator seeded with ``Runtime.seed`` at every call, so a step is deterministic;
   ``latent="mode"`` takes the posterior mean instead;
3. the family's denoiser makes one step conditioned on the prompt;
4. the VAE decoder returns the image (latent divided by the scaling factor, plus the
   shift where the VAE has one), clamped to ``[-1, 1]`` and mapped back to ``[0, 1]``;
5. optionally a colour fix against the bicubic view (:mod:`chainzoom.core.colorfix`).

Sizes: the output must be a multiple of the VAE factor (times the transformer's patch
size for SD3). Other sizes are padded at the bottom and right by edge replication and
the output is cropped back, so any input size works.
"""

from __future__ import annotations

import importlib.util
import json
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from chainzoom.backbones.base import ModelCard, Restorer, count_parameters
from chainzoom.core.colorfix import METHODS as COLOR_FIX_METHODS
from chainzoom.core.colorfix import color_fix
from chainzoom.core.resample import resize
from chainzoom.errors import ChainZoomError
from chainzoom.io.digest import file_sha256
from chainzoom.memory import Placement, initial_plan
from chainzoom.registry import split_options
from chainzoom.runtime import Runtime, torch_dtype

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

LATENT_MODES = ("sample", "mode")
#: ``chainzoom``: one dtype, adapters merged into the weights. ``official``: the official
#: inference's precisions, to reproduce its outputs (see each family's module).
NUMERICS = ("chainzoom", "official")


def resolve_precision(runtime: Runtime) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run on; half precision is refused on the CPU.

    On the development CPUs (no AVX-512) an SD3-sized linear layer ran 8.6x slower in
    bfloat16 and 6x slower in float16 than in float32 (docs/diffusion.md), so a
    half-precision request on the CPU is a mistake to report.
    """
    device = torch.device(runtime.device)
    dtype = runtime.model_dtype()  # auto: float32 on a CPU (bf16 not measured for these models there)
    if device.type == "cpu" and dtype != "float32":
        raise ChainZoomError(
            f"dtype {dtype} runs diffusion models only on a GPU; on the CPU use auto or float32 "
            "(half precision was several times slower there)"
        )
    return device, torch_dtype(dtype)


@dataclass(frozen=True)
class OneStepOptions:
    """Run-time choices that do not change which weights are loaded."""

    #: Keep the text encoders and the denoiser/VAE off the device except while each runs.
    efficient_memory: bool = False
    #: ``none``, ``wavelet`` or ``adain`` (see :mod:`chainzoom.core.colorfix`).
    color_fix: str = "none"
    #: ``sample`` (the official inference, seeded) or ``mode`` (the posterior mean).
    latent: str = "sample"
    #: diffusers VAE tiling; it only acts on images larger than the VAE's ``sample_size``.
    vae_tiling: bool = True
    #: ``chainzoom`` or ``official`` (:data:`NUMERICS`).
    numerics: str = "chainzoom"

    @classmethod
    def parse(cls, options: dict[str, Any], default_color_fix: str) -> OneStepOptions:
        """Check keyword options from the CLI or the API; unknown names are errors."""
        known = {"efficient_memory", "color_fix", "latent", "vae_tiling", "numerics"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ChainZoomError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        color = options.get("color_fix") or default_color_fix
        if color not in COLOR_FIX_METHODS:
            raise ChainZoomError(f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)}, got {color!r}")
        latent = options.get("latent", "sample")
        if latent not in LATENT_MODES:
            raise ChainZoomError(f"latent must be one of {', '.join(LATENT_MODES)}, got {latent!r}")
        numerics = options.get("numerics") or "chainzoom"
        if numerics not in NUMERICS:
            raise ChainZoomError(f"numerics must be one of {', '.join(NUMERICS)}, got {numerics!r}")
        return cls(
            efficient_memory=bool(options.get("efficient_memory", False)),
            color_fix=color,
            latent=latent,
            vae_tiling=bool(options.get("vae_tiling", True)),
            numerics=numerics,
        )


@contextmanager
def explain_out_of_memory(device: torch.device, dtype: torch.dtype, efficient_memory: bool) -> Iterator[None]:
    """Turn an allocation failure into a :class:`ChainZoomError` naming the flags that help."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError, as is a failed CPU allocation
        text = str(exc).lower()
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in text:
            raise
        hints = []
        if device.type != "cpu" and not efficient_memory:
            hints.append("--efficient-memory")
        if device.type != "cpu" and dtype == torch.float32:
            hints.append("--dtype float16")
        hints.append("a smaller --view")
        raise ChainZoomError(f"out of memory on {device} during the diffusion step; try {', '.join(hints)}") from exc


def require_diffusion_packages(backbone: str) -> None:
    """Fail with the install command before anything loads, since the imports are deferred."""
    missing = [name for name in ("diffusers", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ChainZoomError(f"{backbone} needs {' and '.join(missing)}: pip install 'chainzoom[diffusion]'")


def resolve_base(base: str, pipeline_class: str, backbone: str) -> str:
    """Check a local BASE is a diffusers folder of the right pipeline; hub ids go to diffusers as given."""
    path = Path(base).expanduser()
    if not path.exists():
        if base.startswith(("/", "./", "../", "~")):
            raise ChainZoomError(f"{backbone}: base model folder {base} does not exist")
        return base
    index = path / "model_index.json"
    if not index.is_file():
        raise ChainZoomError(f"{backbone}: {base} is not a diffusers model folder (it has no model_index.json)")
    found = json.loads(index.read_text()).get("_class_name")
    if found != pipeline_class:
        raise ChainZoomError(f"{backbone}: {base} holds a {found}, but {backbone} needs a {pipeline_class} base")
    return str(path)


def load_part(loader: Callable[..., Any], base: str, subfolder: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(base, subfolder=...)`` with a one-line error naming the part."""
    try:
        return loader(base, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())
        raise ChainZoomError(f"cannot load the {subfolder!r} component of {base}: {reason}") from exc


def describe_adapters(adapters: dict[str, Path]) -> tuple[dict[str, dict[str, str]], str | None]:
    """Per-file paths and SHA-256s for the manifest, and one hash over all files in order."""
    files = {role: {"path": str(path), "sha256": file_sha256(path)} for role, path in adapters.items()}
    combined = file_sha256(*adapters.values()) if adapters else None
    return files, combined


@dataclass(frozen=True)
class Family:
    """What distinguishes one OSEDiff family from another before its models load."""

    id: str
    pipeline_class: str
    #: Adapter files a spec may name (``lora=``, ``vae=``, ``ckpt=``), and those it must.
    roles: tuple[str, ...]
    required: tuple[str, ...]
    default_color_fix: str
    licence: str
    timestep: float

    @property
    def usage(self) -> str:
        optional = "".join(f"[,{r}=PATH]" for r in self.roles if r not in self.required)
        return f"{self.id}:BASE" + "".join(f",{r}=PATH" for r in self.required) + optional


@dataclass(frozen=True)
class Opened:
    """A family's spec and options, checked, with the base model resolved and the precision chosen."""

    base: str
    adapters: dict[str, Path]
    options: OneStepOptions
    device: torch.device
    dtype: torch.dtype


def open_spec(family: Family, argument: str | None, runtime: Runtime, options: dict[str, Any]) -> Opened:
    """Check ``BASE,role=PATH,...`` and the options, then find the base model (nothing loads yet)."""
    base, files = split_options(argument)
    if not base or any(role not in files for role in family.required):
        what = "a base model and the OSEDiff checkpoint" if family.required else "a base model"
        raise ChainZoomError(f"{family.id} needs {what}: {family.usage}")
    unknown = sorted(set(files) - set(family.roles))
    if unknown:
        raise ChainZoomError(
            f"{family.id}: unknown spec option(s) {', '.join(unknown)} (known: {', '.join(family.roles)})"
        )
    require_diffusion_packages(family.id)
    device, dtype = resolve_precision(runtime)
    settings = OneStepOptions.parse(options, default_color_fix=family.default_color_fix)
    resolved = resolve_base(base, family.pipeline_class, family.id)
    adapters = {role: Path(files[role]) for role in family.roles if role in files}
    return Opened(resolved, adapters, settings, device, dtype)


class OneStepDiffusionSR(Restorer):
    """The upscale loop shared by the families; they supply text encoding and the denoising step.

    ``residency`` places the groups ``"text"`` and ``"sr"`` (:mod:`chainzoom.memory`); the
    pipeline may add the VLM's group to it and choose the plan. Subclasses set ``vae`` and implement
    :meth:`_encode_prompt` and :meth:`_denoise`.
    """

    scale = 4
    text_aware = True

    def __init__(
        self,
        family: Family,
        opened: Opened,
        runtime: Runtime,
        *,
        vae: AutoencoderKL,
        groups: dict[str, list[nn.Module]],
        description: str,
        architecture: str,
        multiple: int,
        max_side: int | None,
    ) -> None:
        options = opened.options
        self.vae = vae
        automatic = runtime.memory == "auto" and not options.efficient_memory
        self.residency = Placement(opened.device, initial_plan(runtime, options.efficient_memory), automatic)
        for name, modules in groups.items():
            self.residency.add(name, modules)
        self.residency.onload()
        self.options = options
        self.device = opened.device
        self.dtype = opened.dtype
        self.seed = runtime.seed
        self.multiple = multiple
        self.max_side = max_side
        files, combined = describe_adapters(opened.adapters)
        modules = [m for group in groups.values() for m in group]
        self._card = ModelCard(
            id=family.id,
            description=description,
            architecture=architecture,
            scale=4,
            text_aware=True,
            parameters=sum(count_parameters(m) for m in modules),
            licence=family.licence,
            source="; ".join([f"base={opened.base}", *(f"{role}={path}" for role, path in opened.adapters.items())]),
            weights_sha256=combined,
        )
        self._settings = {
            "backbone": family.id,
            "base": opened.base,
            "adapters": files,
            "timestep": family.timestep,
            **asdict(options),
            "dtype": runtime.model_dtype(),
            "seed": runtime.seed,
        }
        if options.vae_tiling:
            vae.enable_tiling()

    @abstractmethod
    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, ...]:
        """Text conditioning on ``self.device``; runs while the ``"text"`` group is resident."""

    @abstractmethod
    def _denoise(self, latent: torch.Tensor, condition: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The one denoising step on a scaled latent; runs while the ``"sr"`` group is resident."""

    def upscale(self, image: torch.Tensor, prompt: str = "") -> torch.Tensor:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB image [3,H,W], got shape {tuple(image.shape)}")
        view = resize(image, (image.shape[2] * self.scale, image.shape[1] * self.scale), "bicubic")
        return color_fix(self.restore(view, prompt), view, self.options.color_fix)

    @property
    def color_fix_method(self) -> str:
        return self.options.color_fix

    def restore(self, view: torch.Tensor, prompt: str = "") -> torch.Tensor:
        if view.dim() != 3 or view.shape[0] != 3:
            raise ValueError(f"expected an RGB image [3,H,W], got shape {tuple(view.shape)}")
        height, width = view.shape[1], view.shape[2]
        if self.max_side is not None and max(height, width) > self.max_side:
            raise ChainZoomError(
                f"{self._card.id}: a {width}x{height} output exceeds the base model's largest size "
                f"({self.max_side} px a side); use a smaller --view"
            )
        padded = _pad_to_multiple(view, self.multiple)
        with torch.inference_mode(), explain_out_of_memory(self.device, self.dtype, self.options.efficient_memory):
            with self.residency.use("text"):
                condition = self._encode_prompt(prompt)
            with self.residency.use("sr"):
                latent = self._encode_image(padded)
                latent = self._denoise(latent, condition)
                decoded = self._decode_latent(latent)
        return (decoded[:, :height, :width].float().cpu().clamp(-1.0, 1.0) + 1.0) / 2.0

    def _encode_image(self, image: torch.Tensor) -> torch.Tensor:
        pixels = (image * 2.0 - 1.0).unsqueeze(0).to(self.device, self.dtype)
        generator = None if self.options.latent == "mode" else torch.Generator("cpu").manual_seed(self.seed)
        return encode_latent(self.vae, pixels, generator)

    def _decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return decode_latent(self.vae, latent, self.dtype)[0]

    def offload(self) -> None:
        """Move every part to the CPU so another model (a VLM prompter) can have the device."""
        self.residency.offload()

    def onload(self) -> None:
        """Bring the parts back after :meth:`offload` (in efficient mode they load per step)."""
        self.residency.onload()

    def card(self) -> ModelCard:
        return self._card

    def settings(self) -> dict[str, Any]:
        """Base model, adapter files with their SHA-256, every option that changes the output, and
        the memory plan in effect (which changes none)."""
        return {**self._settings, "memory": self.residency.plan.name}


def encode_latent(
    vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator | None, subtract_shift: bool = False
) -> torch.Tensor:
    """Scaled latents of ``pixels`` ``[B,3,H,W]`` in ``[-1, 1]``: a posterior sample, or its mode.

    The sample's noise is drawn on the CPU from ``generator`` (``None``: the mode), so a
    step is the same on every device. Shared by inference and training (which can
    subtract the shift, as the official SD3 training does), so the two cannot diverge.
    """
    posterior = vae.encode(pixels).latent_dist
    if generator is None:
        latent = posterior.mode()
    else:
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
        latent = posterior.mean + posterior.std * noise.to(pixels.device, posterior.mean.dtype)
    if subtract_shift:
        latent = latent - (vae.config["shift_factor"] or 0.0)
    return latent * vae.config["scaling_factor"]


def decode_latent(vae: AutoencoderKL, latent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Images ``[B,3,H,W]`` (about ``[-1, 1]``, unclamped) of scaled latents: divide, add the shift, decode."""
    shift = vae.config["shift_factor"] or 0.0
    latent = latent / vae.config["scaling_factor"] + shift
    decoded: torch.Tensor = vae.decode(latent.to(dtype), return_dict=False)[0]
    return decoded


def _pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``[3,H,W]`` at the bottom/right by edge replication up to multiples of ``multiple``."""
    pad_h = -image.shape[1] % multiple
    pad_w = -image.shape[2] % multiple
    if not (pad_h or pad_w):
        return image
    return F.pad(image.unsqueeze(0), (0, pad_w, 0, pad_h), mode="replicate")[0]
