"""Name -> factory registries for the pluggable components.

The CLI, config files and Python API all name a component by a spec string,
``name`` or ``name:argument`` (``spandrel:models/x.safetensors``,
``fixed:a cat on a sofa``). A registry entry stores its factory as a
``"module:function"`` path and imports it only when the component is created, so
listing models or importing :mod:`chainzoom` never imports torch-heavy or optional
dependencies, and one broken optional family cannot break the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from chainzoom.errors import ChainZoomError, UnknownComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Settings shared by every component: where and how models run."""

    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    seed: int = 0

    def as_manifest(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "threads": self.threads, "seed": self.seed}


@dataclass(frozen=True)
class Entry:
    name: str
    factory: str
    description: str
    needs_argument: bool = False
    extra: str | None = None


@dataclass
class Registry(Generic[T]):
    """A small registry of component factories, addressed by spec strings."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def register(
        self,
        name: str,
        factory: str,
        description: str,
        *,
        needs_argument: bool = False,
        extra: str | None = None,
    ) -> None:
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.entries[name] = Entry(name, factory, description, needs_argument, extra)

    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, spec: str) -> Entry:
        name = split_spec(spec)[0]
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries)
            raise UnknownComponentError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def create(self, spec: str, runtime: Runtime | None = None, **options: Any) -> T:
        """Build the component named by ``spec``, importing its module only now."""
        entry = self.entry(spec)
        argument = split_spec(spec)[1]
        if entry.needs_argument and not argument:
            raise ChainZoomError(f"{self.kind} {entry.name!r} needs an argument: {entry.name}:...")
        module_name, function_name = entry.factory.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; install it with: pip install 'chainzoom[{entry.extra}]'" if entry.extra else ""
            raise ChainZoomError(f"{self.kind} {entry.name!r} needs a missing package ({exc.name}){hint}") from exc
        factory = getattr(module, function_name)
        return factory(argument, runtime or Runtime(), **options)


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
            raise ChainZoomError(f"expected key=value in {argument!r}, got {item!r}")
        options[key.strip()] = value.strip()
    return target or None, options
