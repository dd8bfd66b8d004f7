"""The job: what will really run, resolved once from a checked config.

A config (:mod:`chainzoom.config`) is what the user asked for; a :class:`ZoomJob` is what
runs on one input: the config with every implied value made explicit (the device it
resolved to, the official numerics that protocol official picks, no model options where
no model runs), the input's SHA-256, and the specs of components passed as objects. The
run driver (:mod:`chainzoom.runs.driver`) and the run folders (:mod:`chainzoom.runs`)
take their options from the job and nowhere else, and a manifest's ``request`` is the
job serialised (:meth:`ZoomJob.request`), read back through :meth:`ZoomJob.read`. So two
front-ends given the same options make the same job, and the manifest says what ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chainzoom.backbones import BACKBONES
from chainzoom.config import FullConfig, ModelConfig, ZoomConfig, from_mapping, identity
from chainzoom.errors import ConfigError
from chainzoom.runtime import Runtime
from chainzoom.secrets import redact_spec

#: The model fields of a config (the runtime aside): cleared where no model runs.
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "runtime")
#: The kinds of run a job describes, and the config each is read back as.
KINDS: dict[str, type[ZoomConfig] | type[FullConfig]] = {"zoom": ZoomConfig, "full": FullConfig}


@dataclass(frozen=True)
class ZoomJob:
    """One input's run: the effective config, the input's identity and where it came from.

    ``backbone_object``/``prompter_object`` record a component the caller passed as an
    object (``object:<id>``): its request then names it instead of a spec, and a rerun
    of that request is refused (nothing can rebuild the object).
    """

    config: ZoomConfig | FullConfig
    input_sha256: str
    #: The input's path, or ``<in memory>``: provenance, not identity.
    source: str
    backbone_object: str | None = None
    prompter_object: str | None = None

    @property
    def kind(self) -> str:
        return "full" if isinstance(self.config, FullConfig) else "zoom"

    @property
    def zoom(self) -> ZoomConfig:
        """The config of a local zoom (``TypeError`` for a full-image job)."""
        if not isinstance(self.config, ZoomConfig):
            raise TypeError("a full-image job has no local-zoom options")
        return self.config

    @property
    def runtime(self) -> Runtime:
        return self.config.runtime

    @property
    def uses_models(self) -> bool:
        return self.config.uses_models

    @property
    def components(self) -> tuple[str | None, str | None]:
        """The backbone and the prompter as the request names them: specs with credentials masked,
        ``object:<id>`` for objects, ``None`` where no model runs."""
        config = self.config
        backbone = self.backbone_object or (redact_spec(config.backbone) if config.backbone else None)
        prompter = self.prompter_object or (redact_spec(config.prompter) if config.prompter else None)
        return backbone, prompter

    def request(self) -> dict[str, Any]:
        """The run's identity as the manifest records it: the options that decide its pixels."""
        data = identity(self.config, kind=self.kind, input_sha256=self.input_sha256)
        data["backbone"], data["prompter"] = self.components
        return data

    @property
    def marked(self) -> bool:
        """Whether the run's images carry the provenance marking (``marking=xmp``)."""
        return self.config.marking != "none"

    def marking(
        self,
        magnification: float,
        prompt: str | None = None,
        *,
        backbone: str | None = None,
        generated: bool = True,
        what: str = "step",
    ) -> bytes | None:
        """The XMP packet of an image of this run at ``magnification`` (None under ``marking=none``).

        ``backbone``: the spec that made it, where it is not the job's (an adaptive step's choice);
        ``generated=False``: state 0 or level 0, the input's own pixels.
        """
        if not self.marked:
            return None
        from chainzoom.io.marking import Marking, source_type

        own_backbone, own_prompter = self.components
        spec = backbone or own_backbone
        kind = source_type(spec, self.uses_models) if generated else None
        if not self.uses_models:  # a baseline mode: the interpolation it runs, no model
            spec = getattr(self.config, "mode", None)
        prompter = own_prompter if self.uses_models else None
        return Marking(self.input_sha256, magnification, spec, prompter, kind, prompt, what).xmp()

    @classmethod
    def read(cls, request: Mapping[str, Any], source: str, where: str) -> ZoomJob:
        """The job a manifest's ``request`` records (``where`` names the manifest in errors)."""
        data = dict(request)
        kind, digest = data.pop("kind", None), data.pop("input_sha256", None)
        if kind not in KINDS or not isinstance(digest, str):
            raise ConfigError(f"{where}: not a chainzoom run manifest (no request of a zoom or full run)")
        for name in ("backbone", "prompter"):
            if str(data.get(name) or "").startswith("object:"):
                raise ConfigError(
                    f"{where}: the run was made with a {name} passed as an object ({data[name]}); "
                    "only runs of named components can be made again"
                )
        config = from_mapping(KINDS[kind], {**data, "inputs": [source]}, where)
        return cls(config, digest, source)


def resolve_job(
    config: ZoomConfig | FullConfig,
    runtime: Runtime,
    input_sha256: str,
    source: str,
    objects: tuple[str | None, str | None] = (None, None),
    view: tuple[int, int] | None = None,
) -> ZoomJob:
    """The job of ``config`` on one input, on the resolved ``runtime``.

    ``objects`` are the recorded specs of a backbone and a prompter passed as objects
    (``None`` for those named by spec). Made explicit here, once, for every front-end:

    - the device the runtime resolved to (a run on ``auto`` records ``cpu`` or ``cuda``), and the
      precision the backbone runs in (``dtype=auto`` resolved from its facts and this machine);
    - the size of the states, ``view``, as planned for the input (a run with the default view
      is the same run as one that names that size), and the adaptive policy's candidates and
      factors (named or default);
    - no model options where no model runs (a baseline of any pipeline is the same run), and
      where models run, the default components by name (``realesrgan``, ``null``);
    - under protocol official, the official numerics of a backbone that has them
      (osediff-sd3), unless numerics was set.
    """
    changes: dict[str, Any] = {"runtime": runtime, "inputs": (source,)}
    if view is not None and isinstance(config, ZoomConfig) and config.protocol == "chainzoom":
        changes["view"] = view
    if isinstance(config, ZoomConfig) and config.policy == "adaptive":
        changes.update(backbones=config.candidate_backbones, factors=config.step_factors)
    if not config.uses_models:
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
        changes.update({name: defaults[name] for name in MODEL_FIELDS})
        changes["runtime"] = dataclasses.replace(runtime, dtype="float32")  # interpolation only
        objects = (None, None)
    else:
        if objects[0] is None:  # the precision the backbone really runs in (auto resolved)
            changes["runtime"] = dataclasses.replace(runtime, dtype=BACKBONES.dtype_for(config.backbone_spec, runtime))
        # the components by name (the default ones too), none where passed as objects
        changes["backbone"] = config.backbone_spec if objects[0] is None else None
        changes["prompter"] = config.prompter_spec if objects[1] is None else None
    if config.uses_models and "numerics" not in config.backbone_options() and config.numerics is not None:
        changes["numerics"] = None  # a neutral value of an option this backbone does not have
    elif (
        isinstance(config, ZoomConfig)
        and config.protocol == "official"
        and config.numerics is None
        and objects[0] is None
        and "numerics" in BACKBONES.entry(config.backbone_spec).facts.options
    ):
        changes["numerics"] = "official"
    effective = dataclasses.replace(config, **changes)
    backbone, prompter = (redact_spec(spec) if spec is not None else None for spec in objects)
    return ZoomJob(effective, input_sha256, source, backbone, prompter)


def read_rerun(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The kind (``zoom``/``full``) and the options of a finished or partial run's manifest
    (``--rerun``), as a layer that flags may override.

    The request is read back through :meth:`ZoomJob.read` (so it is checked as a config is);
    the input file must still hold the bytes the run was made from (its SHA-256 is checked).
    """
    from chainzoom.config import to_dict
    from chainzoom.io.digest import file_sha256

    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable run manifest ({exc})") from None
    request = manifest.get("request") if isinstance(manifest, dict) else None
    source = manifest.get("input") if isinstance(manifest, dict) else None
    if not isinstance(request, dict) or not isinstance(source, str):
        raise ConfigError(f"{path}: not a chainzoom run manifest (no request of a zoom or full run)")
    job = ZoomJob.read(request, source, str(path))
    try:
        actual = file_sha256(source)
    except OSError as exc:
        raise ConfigError(f"{path}: the run's input {source} cannot be read ({exc.strerror or exc})") from None
    if actual != job.input_sha256:
        raise ConfigError(f"{path}: the run's input {source} has changed since the run (its SHA-256 differs)")
    return job.kind, {k: v for k, v in to_dict(job.config).items() if k in request or k == "inputs"}
