"""Typed, validated configurations: one per command, built once from keywords, TOML or flags.

Each command's configuration is a frozen dataclass whose fields are exactly the options
that command honours, under the names the Python API uses (``--tile-overlap`` is
``runtime.tile_overlap``, ``--prompter-max-tokens`` is ``prompter_max_tokens``).
Construction checks every value, and the model options against the registries' facts
(an engine a backbone cannot run, an option a prompter does not take), so a bad option
fails before any model loads or any file is written, with the same message wherever
it was given.

Sources are merged in one order: defaults, then a TOML file (``--config``) or a run's
manifest (``--rerun``), then keywords or flags. :func:`from_mapping` turns a mapping
(parsed TOML, a manifest's ``request``) into a config, refusing unknown keys and wrong
types by name; :func:`to_dict` is its inverse, so a manifest's ``request`` reads back
into the config that made it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from chainzoom.backbones import BACKBONES, DEFAULT_BACKBONE
from chainzoom.core.vocabulary import (
    CONSISTENCY,
    DEFAULT_VLM,
    FORMATS,
    MODEL_MODES,
    MODES,
    PAPER_REWARD_WEIGHTS,
    POLICIES,
    PROMPT_CONTEXTS,
    PROTOCOLS,
)
from chainzoom.errors import ChainZoomError, ConfigError, OptionError, one_line
from chainzoom.prompts import PROMPTERS
from chainzoom.runtime import Runtime
from chainzoom.secrets import redact_spec

C = TypeVar("C")

#: A zoom point: ``(x, y)`` fractions of width and height, or text: ``"X,Y"`` fractions
#: or ``"px:X,Y"`` input pixels.
Center = tuple[float, float] | str
#: The size of every state: the long side, ``(width, height)``, or text ``"N"`` / ``"WxH"``.
View = int | tuple[int, int] | str | None

#: The largest total magnification, 4**20 (about 1.1e12): a state's box is then 2**-40 of
#: the view, which float64 still places exactly inside an input of up to 8192 px (13 bits
#: of pixels, 40 of fraction); far beyond it boxes collapse to zero width.
MAX_SCALE = 4.0**20
DEFAULT_PROMPTER = "null"

#: Config fields that set a backbone option, and that option's name.
BACKBONE_OPTION_FIELDS = {"efficient_memory": "efficient_memory", "color_fix": "color_fix", "numerics": "numerics"}
#: Config fields that set a prompter option, and that option's name.
PROMPTER_OPTION_FIELDS = {
    "prompter_model": "model",
    "prompter_context": "context",
    "prompter_adapter": "adapter",
    "prompter_max_tokens": "max_tokens",
    "prompter_sample": "sample",
    "prompter_offload": "offload",
    "prompter_timeout": "timeout",
    "prompt": "text",
}
#: Values that change nothing where no model runs, or where the component has no such option:
#: accepted there (a script may pass one set of flags to every mode) and left out of the
#: options. Where the option exists they are real choices (``numerics=chainzoom`` overrides
#: what protocol official implies); a run's job records the default components by name.
NEUTRAL: dict[str, Any] = {"backbone": DEFAULT_BACKBONE, "prompter": "null", "numerics": "chainzoom"}
#: Fields holding component specs, which may carry credentials.
SPEC_FIELDS = ("backbone", "prompter", "critic", "policy")
#: The chain's consistency method unless the user names one: ``anchor``, the only method that
#: cut the cumulative colour drift by more than half at x256 and x1024 with NIQE within 5 %
#: for both bundled backbones (docs/consistency.md).
DEFAULT_CONSISTENCY = "anchor"
#: The consistency methods of full-image mode: the local ones, which tiles can blend, and
#: ``anchor`` as a smooth shift field over the assembled level (chainzoom.runs.full).
FULL_CONSISTENCY = ("none", "wavelet", "backprojection", "anchor")
#: The adaptive policy's step factors unless ``factors`` says otherwise: a 4x step, or a 2x one
#: where half the zoom scores better.
DEFAULT_FACTORS = (2.0, 4.0)
#: Fields that say where and how a run is written or shown, not what its pixels are:
#: left out of a run's identity (its manifest ``request``).
#: ``marking`` says what the files carry about their pixels, not what they are: the manifest
#: records it outside the request.
NOT_IDENTITY = ("inputs", "out", "overwrite", "quiet", "animation", "prompter_timeout", "marking")
#: Where a command's work runs: this process, or the actors of a Ray cluster.
EXECUTORS = ("local", "ray")
#: Executor fields: where the pixels are made never changes what they are.
EXECUTOR_FIELDS = ("executor", "ray_address", "workers")


@dataclass(frozen=True)
class BackboneConfig:
    """The backbone and how it runs. ``backbone=None``: the default (``realesrgan``)."""

    backbone: str | None = None
    efficient_memory: bool = False
    color_fix: str | None = None
    #: Diffusion backbones: ``official`` reproduces the official inference's precisions.
    numerics: str | None = None
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        for name in ("center", "view"):
            if hasattr(self, name):  # one spelling per value, so equal runs have equal requests
                object.__setattr__(self, name, canonical(name, getattr(self, name)))
        self.check()

    def check(self) -> None:
        """Every option against the component facts; subclasses add their own checks."""
        if not self.uses_models:
            _refuse_set(self, ("backbone", *BACKBONE_OPTION_FIELDS), f"does not apply: {self.why_no_models}")
            return
        with _named_as_fields(BACKBONE_OPTION_FIELDS):
            BACKBONES.check(self.backbone_spec, self.backbone_options(), self.runtime)

    @property
    def uses_models(self) -> bool:
        return True

    @property
    def why_no_models(self) -> str:
        return ""

    @property
    def backbone_spec(self) -> str:
        return self.backbone or DEFAULT_BACKBONE

    def backbone_options(self) -> dict[str, Any]:
        """The backbone options the user set, under the backbone's names (a neutral value of an
        option the backbone does not have is left out: it changes nothing)."""
        takes = BACKBONES.entry(self.backbone_spec).facts.options
        return {
            option: getattr(self, name)
            for name, option in BACKBONE_OPTION_FIELDS.items()
            if _is_set(self, name) and (option in takes or not _is_neutral(self, name))
        }


@dataclass(frozen=True)
class ModelConfig(BackboneConfig):
    """Backbone and prompter: everything :class:`chainzoom.ChainZoom` loads once."""

    prompter: str | None = None
    prompter_model: str | None = None
    prompter_adapter: str | None = None
    prompter_max_tokens: int | None = None
    prompter_sample: bool = False
    prompter_offload: bool = False
    prompter_timeout: float | None = None
    prompt: str | None = None
    #: The VLM's context (``multiscale`` or ``single``: one image or two in its message);
    #: eval's ``contexts`` rows set it per row.
    prompter_context: str | None = None

    def check(self) -> None:
        super().check()
        if self.prompter_timeout is not None and not (
            math.isfinite(self.prompter_timeout) and self.prompter_timeout > 0
        ):
            raise OptionError("prompter_timeout", f"must be a positive number of seconds, got {self.prompter_timeout}")
        if self.prompter_context is not None and self.prompter_context not in PROMPT_CONTEXTS:
            raise OptionError(
                "prompter_context", f"must be one of {', '.join(PROMPT_CONTEXTS)}, got {self.prompter_context!r}"
            )
        if not self.uses_models:
            _refuse_set(self, ("prompter", *PROMPTER_OPTION_FIELDS), f"does not apply: {self.why_no_models}")
            return
        with _named_as_fields(PROMPTER_OPTION_FIELDS):
            PROMPTERS.check(self.prompter_spec, self.prompter_options())

    @property
    def prompter_spec(self) -> str:
        return self.prompter or DEFAULT_PROMPTER

    def prompter_options(self) -> dict[str, Any]:
        """The prompter options the user set, under the prompter's names."""
        return {option: getattr(self, name) for name, option in PROMPTER_OPTION_FIELDS.items() if _is_set(self, name)}

    def model_options(self) -> dict[str, Any]:
        """The model part of a command's config as keywords (what :class:`chainzoom.ChainZoom` takes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}

    def model_config(self) -> ModelConfig:
        """Only the model part of a command's config."""
        return ModelConfig(**self.model_options())


@dataclass(frozen=True)
class ExecutorConfig(ModelConfig):
    """The models, and where they run: in this process, or on ``workers`` actors of a Ray cluster.

    ``ray_address=None`` with ``executor="ray"`` means ``RAY_ADDRESS`` from the
    environment, else a private Ray instance started on this machine (read when the run
    starts, not here: a config stays plain data). ``workers=None`` is one actor per GPU
    of the cluster, else one per CPU.
    """

    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None

    def check(self) -> None:
        super().check()
        if self.executor not in EXECUTORS:
            raise OptionError("executor", f"must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.executor != "ray":
            _refuse_set(self, ("ray_address", "workers"), "applies only with executor ray (--executor ray)")
        if self.workers is not None and self.workers < 1:
            raise OptionError("workers", f"must be at least 1, got {self.workers}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise OptionError("ray_address", "must be HOST:PORT, ray://HOST:PORT, auto or local, got an empty text")


@dataclass(frozen=True)
class ZoomConfig(ExecutorConfig):
    """``chainzoom zoom``: local zooms of one or more images."""

    inputs: tuple[str, ...] = ()
    out: str = "out"
    scale: float = 256.0
    center: Center = (0.5, 0.5)
    view: View = None
    mode: str = "chain"
    #: ``auto``: :data:`DEFAULT_CONSISTENCY` for the chain under protocol chainzoom, ``none``
    #: otherwise; resolved on construction, so requests and manifests name the method.
    consistency: str = "auto"
    #: ``official``: the official implementation's 8-bit arithmetic on its centred square.
    protocol: str = "chainzoom"
    #: The side of the official square (``--process_size``); protocol official only.
    process_size: int = 512
    #: ``adaptive``: each step's backbone and factor chosen by NIQE (chainzoom.pipeline.adaptive).
    policy: str = "fixed"
    #: The adaptive policy's candidate backbones (default: ``backbone`` alone).
    backbones: tuple[str, ...] = ()
    #: The step factors the adaptive policy may choose from (each at most the backbone's
    #: scale); empty: :data:`DEFAULT_FACTORS`.
    factors: tuple[float, ...] = ()
    #: The adaptive policy stops when the best step improves NIQE over bicubic by less.
    stop_below: float | None = 0.0
    max_pixels: int | None = None
    overwrite: bool = False
    animation: bool = True
    quiet: bool = False
    #: ``xmp``: every image written says it was generated (docs/provenance.md); ``none``: recorded.
    marking: str = "xmp"

    def __post_init__(self) -> None:
        if self.consistency == "auto":
            chain = self.mode == "chain" and self.protocol == "chainzoom"
            object.__setattr__(self, "consistency", DEFAULT_CONSISTENCY if chain else "none")
        super().__post_init__()

    def check(self) -> None:
        if self.mode not in MODES:
            raise OptionError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.consistency not in CONSISTENCY:
            raise OptionError("consistency", f"must be one of {', '.join(CONSISTENCY)}, got {self.consistency!r}")
        if self.consistency != "none" and self.mode != "chain":
            raise OptionError("consistency", "applies to mode chain only")
        super().check()
        check_scale(self.scale)
        check_center(self.center)
        check_view(self.view)
        self._check_protocol()
        self._check_policy()
        check_max_pixels(self.max_pixels)
        check_out(self.out)
        check_marking(self.marking)

    def _check_policy(self) -> None:
        if self.policy not in POLICIES:
            raise OptionError("policy", f"must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.policy == "fixed":
            _refuse_set(self, ("backbones", "factors", "stop_below"), "applies only to policy adaptive")
            return
        if self.mode != "chain" or self.protocol != "chainzoom":
            raise OptionError("policy", "adaptive applies to mode chain under protocol chainzoom")
        if self.executor != "local":
            raise OptionError("executor", "the adaptive policy runs on the local executor only")
        if any(not (1.0 < f <= 4.0) for f in self.factors):
            raise OptionError("factors", f"must be step factors in (1, 4], such as 2,4; got {list(self.factors)}")
        if self.stop_below is not None and not math.isfinite(self.stop_below):
            raise OptionError("stop_below", f"must be a number of NIQE points, got {self.stop_below}")
        for spec in self.backbones:
            try:
                BACKBONES.check(spec, {}, BACKBONES.runtime_for(spec, self.runtime))
            except ChainZoomError as exc:
                raise OptionError("backbones", one_line(exc)) from None
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            raise OptionError(
                "policy", "adaptive scores each step with NIQE, which needs: pip install 'chainzoom[eval]'"
            )

    @property
    def step_factors(self) -> tuple[float, ...]:
        """The adaptive policy's factors: ``factors``, or :data:`DEFAULT_FACTORS`."""
        return self.factors or DEFAULT_FACTORS

    @property
    def candidate_backbones(self) -> tuple[str, ...]:
        """The adaptive policy's candidates: ``backbones``, or the backbone alone."""
        return self.backbones or (self.backbone_spec,)

    def _check_protocol(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise OptionError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol == "chainzoom":
            _refuse_set(self, ("process_size",), "applies only to protocol official")
            return
        if self.mode == "direct":
            raise OptionError(
                "mode", "direct is chainzoom's baseline; protocol official has onestep (see docs/parity.md)"
            )
        if self.consistency != "none":
            raise OptionError("consistency", "does not apply to protocol official (its colour fix is color_fix)")
        if tuple(self.center) != (0.5, 0.5):
            raise OptionError("center", "protocol official zooms the centre of its square, as inference_coz.py does")
        if self.view is not None:
            raise OptionError("view", "protocol official makes process_size squares; set that instead")
        if not 4 <= self.process_size <= 8192:
            raise OptionError("process_size", f"must be between 4 and 8192 px, got {self.process_size}")
        from chainzoom.pipeline.official import official_plan

        official_plan(self.process_size, self.scale, self.mode)

    @property
    def uses_models(self) -> bool:
        return self.mode in MODEL_MODES

    @property
    def why_no_models(self) -> str:
        return f"mode {self.mode} uses no model"


@dataclass(frozen=True)
class FullConfig(ExecutorConfig):
    """``chainzoom zoom --full``: every level the whole image, tiled and streamed to disk."""

    inputs: tuple[str, ...] = ()
    out: str = "out"
    scale: float = 16.0
    format: str = "tiff"
    #: ``anchor`` (the default, as for the chain: per level, against the input image), or per
    #: tile, against the tile's input: ``wavelet``, ``backprojection``; ``none``.
    consistency: str = DEFAULT_CONSISTENCY
    max_pixels: int | None = None
    overwrite: bool = False
    quiet: bool = False
    marking: str = "xmp"

    def check(self) -> None:
        super().check()
        check_scale(self.scale)
        if self.consistency not in FULL_CONSISTENCY:
            why = "adain matches a state's colour spread, which per tile would show the seams"
            if self.consistency not in CONSISTENCY:
                why = f"must be one of {', '.join(FULL_CONSISTENCY)}"
            raise OptionError("consistency", f"{self.consistency}: {why} (--full takes {', '.join(FULL_CONSISTENCY)})")
        if self.format not in FORMATS:
            raise OptionError("format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        check_max_pixels(self.max_pixels)
        check_out(self.out)
        check_marking(self.marking)


@dataclass(frozen=True)
class PromptsConfig(ModelConfig):
    """``chainzoom prompts``: the prompts a zoom would use, optionally scored."""

    input: str = ""
    scale: float = 256.0
    center: Center = (0.5, 0.5)
    view: View = None
    cache: str | None = None
    score: bool = False
    reward: str = "phrase=0.5,repetition=0.5"
    critic: str | None = None
    phrases: str | None = None

    def check(self) -> None:
        super().check()
        check_scale(self.scale)
        check_center(self.center)
        check_view(self.view)
        if not self.score:
            _refuse_set(self, ("critic", "phrases"), "applies only with score (--score)")


@dataclass(frozen=True)
class EvalConfig(ExecutorConfig):
    """``chainzoom eval``: every mode on every image, scored, as a report."""

    images: tuple[str, ...] = ()
    scales: tuple[int, ...] = (4, 16, 64, 256)
    modes: tuple[str, ...] = MODES
    #: The chain once per method (rows ``chain``, ``chain+anchor``...).
    consistency: tuple[str, ...] = ("none",)
    #: The model modes once per VLM context (rows ``chain@multiscale``, ``chain@single``: the
    #: paper's prompt ablation); empty: the prompter as configured, one row per mode.
    contexts: tuple[str, ...] = ()
    #: The chain once per zoom policy (rows ``chain``, ``chain~adaptive``), with the adaptive
    #: policy's options as ``chainzoom zoom`` has them.
    policy: tuple[str, ...] = ("fixed",)
    backbones: tuple[str, ...] = ()
    factors: tuple[float, ...] = ()
    stop_below: float | None = 0.0
    view: View = None
    metrics: tuple[str, ...] = ("all",)
    fidelity: bool = True
    drift: bool = True
    out: str = "report"
    overwrite: bool = False
    quiet: bool = False

    def check(self) -> None:
        super().check()
        bad = [s for s in self.scales if s < 4 or 4 ** round(math.log(s, 4)) != s]
        if bad or not self.scales:
            raise OptionError("scales", f"must be powers of 4 (4,16,64,256,...), got {list(self.scales)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise OptionError("modes", f"must be some of {', '.join(MODES)}, got {list(self.modes)}")
        methods = [c for c in self.consistency if c not in CONSISTENCY]
        if methods or not self.consistency:
            raise OptionError("consistency", f"must be some of {', '.join(CONSISTENCY)}, got {list(self.consistency)}")
        policies = [p for p in self.policy if p not in POLICIES]
        if policies or not self.policy:
            raise OptionError("policy", f"must be some of {', '.join(POLICIES)}, got {list(self.policy)}")
        if "adaptive" in self.policy:
            ZoomConfig(
                backbone=self.backbone,
                runtime=self.runtime,
                policy="adaptive",
                backbones=self.backbones,
                factors=self.factors,
                stop_below=self.stop_below,
            )
        else:
            _refuse_set(self, ("backbones", "factors", "stop_below"), "applies only to policy adaptive")
        if self.contexts:
            if any(c not in PROMPT_CONTEXTS for c in self.contexts):
                raise OptionError(
                    "contexts", f"must be some of {', '.join(PROMPT_CONTEXTS)}, got {list(self.contexts)}"
                )
            if "context" not in PROMPTERS.entry(self.prompter_spec).facts.options:
                raise OptionError("contexts", f"needs a prompter that has contexts (vlm), not {self.prompter_spec!r}")
        check_view(self.view)
        check_out(self.out)


@dataclass(frozen=True)
class EvalRow:
    """One row of an evaluation: its label, the zoom mode, the chain's consistency and policy, the VLM's context."""

    label: str
    mode: str
    consistency: str
    #: ``None``: the prompter as configured.
    context: str | None = None
    policy: str = "fixed"


def eval_rows(config: EvalConfig) -> list[EvalRow]:
    """The rows ``config`` compares: every mode, the chain once per consistency method and per
    policy, and the model modes once per VLM context when ``contexts`` names some."""
    rows = []
    for mode in config.modes:
        chain = mode == "chain"
        contexts: tuple[str | None, ...] = config.contexts if config.contexts and mode in MODEL_MODES else (None,)
        for method in config.consistency if chain else ("none",):
            for policy in config.policy if chain else ("fixed",):
                for context in contexts:
                    label = (
                        mode + ("" if method == "none" else f"+{method}") + ("" if policy == "fixed" else f"~{policy}")
                    )
                    label += "" if context is None else f"@{context}"
                    rows.append(EvalRow(label, mode, method, context, policy))
    return rows


@dataclass(frozen=True)
class AlignConfig(BackboneConfig):
    """``chainzoom align``: GRPO alignment of the prompt VLM; the backbone makes the training pairs."""

    images: tuple[str, ...] = ()
    policy: str = DEFAULT_VLM
    critic: str | None = None
    out: str = "runs/align"
    reward: str = PAPER_REWARD_WEIGHTS
    phrases: str | None = None
    steps: int = 200
    group_size: int = 4
    batch_size: int = 2
    lr: float = 5e-5
    beta: float = 0.04
    clip: float = 0.2
    temperature: float = 1.0
    max_new_tokens: int = 32
    save_every: int = 50
    scale: float = 256.0
    view: int | None = None
    centers: int = 1
    gradient_checkpointing: bool = False

    def check(self) -> None:
        super().check()
        for name in ("steps", "batch_size", "max_new_tokens", "save_every", "centers"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise OptionError("group_size", "must be at least 2: GRPO compares prompts within a group")
        for name in ("lr", "clip", "temperature"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be positive, got {getattr(self, name)}")
        if self.beta < 0:
            raise OptionError("beta", f"must not be negative, got {self.beta}")
        check_scale(self.scale)
        check_out(self.out)


# ---------------------------------------------------------------------------- checks


def check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and 1 < scale <= MAX_SCALE):
        raise OptionError("scale", f"must be a number greater than 1 and at most 4**20 (~1.1e12), got {scale:g}")


def canonical(name: str, value: Any) -> Any:
    """``"0.5,0.5"`` -> ``(0.5, 0.5)``; ``"64"`` -> ``64``; ``"64x48"`` -> ``(64, 48)``; else unchanged."""
    try:
        if name == "center" and isinstance(value, str) and not value.startswith("px:"):
            x, y = (float(v) for v in value.split(","))
            return (x, y)
        if name == "view" and isinstance(value, str):
            sides = tuple(int(v) for v in value.lower().split("x"))
            return sides[0] if len(sides) == 1 else sides
    except ValueError:
        pass  # left as given: the check names the problem
    if isinstance(value, list):
        return tuple(value)
    return value


def check_center(center: Center) -> None:
    """The form of a zoom point; whether it lies inside the image is checked when planning."""
    if isinstance(center, str):
        body = center[3:] if center.startswith("px:") else center
        try:
            x, y = (float(v) for v in body.split(","))
        except ValueError:
            raise OptionError("center", f"must be 'X,Y' fractions or 'px:X,Y' pixels, got {center!r}") from None
        if center.startswith("px:"):
            return
    else:
        x, y = center
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise OptionError("center", f"{x:g},{y:g} is outside the image: fractions must be in [0, 1]")


def check_view(view: View) -> None:
    if view is None:
        return
    if isinstance(view, str):
        try:
            sides = [int(v) for v in view.lower().split("x")]
        except ValueError:
            raise OptionError("view", f"must be N or WxH, got {view!r}") from None
        if len(sides) not in (1, 2):
            raise OptionError("view", f"must be N or WxH, got {view!r}")
    else:
        sides = [view] if isinstance(view, int) else list(view)
    if min(sides) <= 0:
        raise OptionError("view", f"must be positive, got {view!r}")


def check_max_pixels(max_pixels: int | None) -> None:
    if max_pixels is not None and max_pixels < 1:
        raise OptionError("max_pixels", f"must be at least 1, got {max_pixels}")


def check_out(out: str) -> None:
    if not str(out).strip():
        raise OptionError("out", "must name a folder, got an empty path")


@contextlib.contextmanager
def _named_as_fields(fields: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a component's option error under the config field that set the option."""
    try:
        yield
    except OptionError as exc:
        field_of = {option: name for name, option in fields.items()}
        raise OptionError(field_of.get(exc.option, exc.option), exc.problem) from None


def check_marking(marking: str) -> None:
    from chainzoom.io.marking import MARKINGS

    if marking not in MARKINGS:
        raise OptionError("marking", f"must be one of {', '.join(MARKINGS)}, got {marking!r}")


def _refuse_set(config: object, names: tuple[str, ...], problem: str) -> None:
    """Refuse each of ``names`` that was given at a value that changes something."""
    for name in names:
        if _is_set(config, name) and not _is_neutral(config, name):
            raise OptionError(name, problem)


def _is_neutral(config: object, name: str) -> bool:
    return name in NEUTRAL and getattr(config, name) == NEUTRAL[name]


def _is_set(config: object, name: str) -> bool:
    """Whether a field differs from its default (the defaults of these fields mean 'not given')."""
    spec = next(f for f in dataclasses.fields(config) if f.name == name)  # type: ignore[arg-type]
    return bool(getattr(config, name) != spec.default)


# ---------------------------------------------------------------------------- sources


def from_mapping(cls: type[C], data: Mapping[str, Any], source: str) -> C:
    """Build ``cls`` from a mapping, refusing unknown keys and wrong types by name.

    Keys may use dashes (``tile-overlap``); ``runtime`` is a nested table; lists are
    accepted where the config holds tuples (TOML and JSON have no tuples).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in hints:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(hints)})")
        if hints[name] is Runtime:
            if isinstance(value, Runtime):
                values[name] = value
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key} must be a table of runtime options, got {value!r}")
            values[name] = from_mapping(Runtime, value, f"{source} [runtime]")
            continue
        values[name] = coerce(value, hints[name], f"{source}: {key}")
    return cls(**values)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` names, or a :class:`ConfigError` saying what was expected."""
    converted = _convert(value, hint)
    if converted is _NO:
        raise ConfigError(f"{where} must be {describe(hint)}, got {value!r}")
    return converted


_NO = object()


def _convert(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for member in typing.get_args(hint):
            converted = _convert(value, member)
            if converted is not _NO:
                return converted
        return _NO
    if hint is type(None):
        return None if value is None else _NO
    if hint is bool:
        return value if isinstance(value, bool) else _NO
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _NO
    if hint is str:
        return str(value) if isinstance(value, (str, os.PathLike)) else _NO
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0]) for v in value]
        elif len(args) == len(value):
            items = [_convert(v, a) for v, a in zip(value, args)]
        else:
            return _NO
        return _NO if any(i is _NO for i in items) else tuple(items)
    return _NO


def describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> ``a whole number or nothing``."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "nothing"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML file as a mapping, or one line saying why it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; the ``runtime`` table is merged key by key."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name == "runtime" and isinstance(value, Mapping) and isinstance(result.get("runtime"), Mapping):
                result["runtime"] = merged(result["runtime"], value)
            else:
                result[name] = value
    return result


def to_dict(config: object) -> dict[str, Any]:
    """The config as plain JSON data (tuples as lists); :func:`from_mapping` reads it back.

    Credentials in component specs (a ``user:password@`` or ``?token=`` in an endpoint's
    URL) are masked, since this is what manifests and saved configs hold: a rerun takes
    its credentials from the environment (``OPENAI_API_KEY``), never from a file.
    """
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))  # type: ignore[call-overload]
    for name in SPEC_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = redact_spec(data[name])
    return data


def identity(config: object, **extra: Any) -> dict[str, Any]:
    """The part of a config that decides a run's pixels, plus ``extra`` (input, hashes, kind)."""
    data = {k: v for k, v in to_dict(config).items() if k not in NOT_IDENTITY + EXECUTOR_FIELDS}
    if isinstance(data.get("runtime"), dict):  # where weights sit, and a permission, change no pixel
        data["runtime"] = {k: v for k, v in data["runtime"].items() if k not in ("memory", "allow_slow_dtype")}
    return {**extra, **data}
