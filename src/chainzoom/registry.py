"""Name -> factory registries for the pluggable components, with each component's facts.

The CLI, config files and Python API name a component by a spec string, ``name`` or
``name:argument`` (``spandrel:models/x.safetensors``, ``fixed:a cat on a sofa``). An
entry stores its factory as a ``"module:function"`` path, imported only when the
component is created, and the component's *facts* (scale, whether it reads the prompt,
engines, dtypes, options, licence, extra): listing models or checking a configuration
never imports torch or an optional family, and one broken family cannot break the
others (BasicSR's lesson).

Third-party packages add entries through the entry-point groups ``chainzoom.backbones``
and ``chainzoom.prompters``: each entry point names a :class:`BackboneEntry` or
:class:`PrompterEntry` object in a light module of the plugin. A plugin that fails to
load is skipped and reported by ``chainzoom models``; naming it gives its error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from chainzoom.errors import ModelError, OptionError, UnknownComponentError, one_line
from chainzoom.runtime import MODEL_DTYPES, Runtime
from chainzoom.secrets import redact_spec

T = TypeVar("T")

#: Working memory of RRDBNet (the bundled models) per *input* pixel, in bytes: measured at
#: float32 on CUDA (4.5 GiB for a 640x427 input, about 17 KiB per pixel; docs/performance.md).
RRDBNET_BYTES_PER_INPUT_PIXEL = 18 * 1024


@dataclass(frozen=True)
class BackboneFacts:
    """What is known about a backbone before it is loaded (spandrel's descriptor, in spirit).

    ``scale=None``: read from the model file. ``bytes_per_input_pixel`` is the working
    memory at float32, which the tiler budgets with; ``size_multiple`` and ``max_side``
    are the input sizes the model accepts (it pads to the multiple itself).
    """

    scale: int | None = 4
    text_aware: bool = False
    engines: tuple[str, ...] = ("torch",)
    dtypes: tuple[str, ...] = MODEL_DTYPES
    options: tuple[str, ...] = ()
    bytes_per_input_pixel: int = RRDBNET_BYTES_PER_INPUT_PIXEL
    size_multiple: int = 1
    max_side: int | None = None
    licence: str | None = None
    #: bfloat16 measured faster than float32 on CPUs with native bf16, and within the model's
    #: stated tolerance (docs/performance.md): ``dtype=auto`` picks it there.
    cpu_bf16: bool = False


@dataclass(frozen=True)
class PrompterFacts:
    """What is known about a prompter before it is loaded.

    ``uses_model``: its answers cost a model call, so run folders cache them.
    """

    options: tuple[str, ...] = ()
    uses_model: bool = False
    licence: str | None = None


@dataclass(frozen=True)
class Entry:
    """A registered component: its name, factory path, one-line description and facts.

    ``argument`` names what follows ``name:`` in a spec (``"PATH"``); ``required`` says
    whether it must be given. ``extra`` is the pip extra that installs its dependencies.
    """

    name: str
    factory: str
    description: str
    argument: str | None = None
    required: bool = False
    extra: str | None = None

    def usage(self) -> str:
        if self.argument is None:
            return self.name
        return f"{self.name}:{self.argument}" if self.required else f"{self.name}[:{self.argument}]"


@dataclass(frozen=True)
class BackboneEntry(Entry):
    facts: BackboneFacts = field(default_factory=BackboneFacts)


@dataclass(frozen=True)
class PrompterEntry(Entry):
    facts: PrompterFacts = field(default_factory=PrompterFacts)


E = TypeVar("E", BackboneEntry, PrompterEntry)


@dataclass
class Registry(Generic[T, E]):
    """The components of one kind, built-in and from plugins, addressed by spec strings."""

    kind: str
    group: str
    entry_type: type[E]
    _builtin: dict[str, E] = field(default_factory=dict)
    _plugins: dict[str, E] | None = None
    #: Plugins that could not be loaded: entry-point name -> the reason, in one line.
    plugin_problems: dict[str, str] = field(default_factory=dict)

    def register(self, entry: E) -> None:
        if entry.name in self._builtin:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._builtin[entry.name] = entry

    @property
    def entries(self) -> Mapping[str, E]:
        """Built-in entries first, then the plugins' (loaded once, on first use)."""
        if self._plugins is None:
            self._plugins = self._load_plugins()
        return {**self._builtin, **self._plugins}

    def __iter__(self) -> Iterator[E]:
        return iter(self.entries.values())

    def _load_plugins(self) -> dict[str, E]:
        found: dict[str, E] = {}
        for point in entry_points(group=self.group):
            try:
                entry = point.load()
            except Exception as exc:  # a broken plugin must not break chainzoom
                self.plugin_problems[point.name] = f"{point.value} failed to import: {one_line(exc)}"
                continue
            problem = None
            if not isinstance(entry, self.entry_type):
                problem = f"{point.value} is not a chainzoom {self.entry_type.__name__}"
            elif entry.name != point.name:
                problem = f"{point.value} is named {entry.name!r}, not {point.name!r}"
            elif entry.name in self._builtin or entry.name in found:
                problem = f"the name {entry.name!r} is taken by another {self.kind}"
            if problem:
                self.plugin_problems[point.name] = problem
            else:
                found[entry.name] = entry
        return found

    def entry(self, spec: str) -> E:
        name = split_spec(spec)[0]
        entries = self.entries
        if name in entries:
            return entries[name]
        if name in self.plugin_problems:
            raise ModelError(f"{self.kind} plugin {name!r} is broken: {self.plugin_problems[name]}")
        raise UnknownComponentError(f"unknown {self.kind} {name!r} (known: {', '.join(entries)})")

    def check(self, spec: str, options: Mapping[str, Any], runtime: Runtime | None = None) -> E:
        """Refuse, from the facts alone, a spec, option, engine or dtype the component cannot use."""
        entry = self.entry(spec)
        argument = split_spec(spec)[1]
        if entry.required and not argument:
            raise OptionError(self.kind, f"{entry.name!r} needs an argument: {entry.usage()}")
        if entry.argument is None and argument:
            raise OptionError(self.kind, f"{entry.name!r} takes no argument, got {spec!r}")
        facts = entry.facts
        for option in options:
            if option not in facts.options:
                takes = f"its options: {', '.join(facts.options)}" if facts.options else "it takes none"
                raise OptionError(option, f"does not apply to {self.kind} {entry.name!r} ({takes})")
        if runtime is not None and isinstance(facts, BackboneFacts):
            if runtime.engine not in facts.engines:
                raise OptionError(
                    "engine",
                    f"{runtime.engine} does not apply to {self.kind} {entry.name!r} "
                    f"(engines: {', '.join(facts.engines)})",
                )
            if runtime.engine == "ncnn" and runtime.dtype not in ("auto", "float32"):
                raise OptionError(
                    "dtype", f"{runtime.dtype}: the ncnn engine runs its own float32; use auto or float32"
                )
            if runtime.dtype != "auto" and runtime.dtype not in facts.dtypes:
                raise OptionError(
                    "dtype",
                    f"{runtime.dtype} does not apply to {self.kind} {entry.name!r} (dtypes: {', '.join(facts.dtypes)})",
                )
        return entry

    def create(self, spec: str, runtime: Runtime | None = None, **options: Any) -> T:
        """Check ``spec`` and ``options`` against the facts, then import the factory and build."""
        runtime = runtime or Runtime()
        entry = self.check(spec, options, runtime)
        runtime = runtime if runtime.resolved else runtime.resolve()
        if isinstance(entry, BackboneEntry) and runtime.dtype == "auto":
            runtime = replace(runtime, dtype=self.dtype_for(spec, runtime))
        factory = load_factory(entry, self.kind)
        component: T = factory(split_spec(spec)[1], runtime, **options)
        return component

    def dtype_for(self, spec: str, runtime: Runtime) -> str:
        """The precision a backbone runs in with ``runtime`` (on a resolved device): the one named,
        or what ``auto`` picks from the backbone's facts on this machine (:meth:`Runtime.model_dtype`)."""
        if runtime.dtype == "auto" and runtime.engine == "ncnn":
            return "float32"  # the ncnn engine runs its own float32
        entry = self.entry(spec)
        facts = entry.facts if isinstance(entry, BackboneEntry) else BackboneFacts()
        return runtime.model_dtype(facts.dtypes, facts.cpu_bf16)

    def runtime_for(self, spec: str, runtime: Runtime) -> Runtime:
        """``runtime`` for another backbone ``spec`` (an adaptive candidate): the precision named
        where that backbone runs in it, else its own ``auto`` one."""
        entry = self.entry(spec)
        facts = entry.facts if isinstance(entry, BackboneEntry) else BackboneFacts()
        return runtime if runtime.dtype in facts.dtypes else replace(runtime, dtype="auto")


def load_factory(entry: Entry, kind: str) -> Callable[..., Any]:
    """Import the entry's factory; a missing optional package says which extra to install."""
    module_name, function_name = entry.factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'chainzoom[{entry.extra}]'" if entry.extra else ""
        raise ModelError(f"{kind} {entry.name!r} needs a missing package ({exc.name}){hint}") from exc
    factory: Callable[..., Any] = getattr(module, function_name)
    return factory


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"name:arg"`` -> ``("name", "arg")``; ``"name"`` -> ``("name", None)``."""
    name, sep, argument = spec.partition(":")
    return name.strip(), (argument if sep else None)


def split_options(argument: str | None) -> tuple[str | None, dict[str, str]]:
    """``"BASE,key=value,key2=value2"`` -> ``("BASE", {...})`` for factories that take options."""
    if not argument:
        return None, {}
    target, *rest = argument.split(",")
    options: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionError("spec", f"expected key=value in {redact_spec(argument)!r}, got {redact_spec(item)!r}")
        options[key.strip()] = value.strip()
    return target or None, options
