"""What the app offers: every registered backbone and prompter, available or with why not.

Read from the registries' facts and from chainzoom's own package metadata (which
packages each extra installs), so nothing heavy is imported to fill a menu and a
missing extra shows as unavailable, with its install hint, before any run starts.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from functools import cache

from chainzoom.registry import Entry, Registry, split_spec

_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([\w-]+)["']""")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Choice:
    """One menu entry: its name, what it is, what its argument is and whether it can run here."""

    name: str
    description: str
    argument: str | None
    required: bool
    problem: str | None  # None: available

    @property
    def label(self) -> str:
        return self.name if self.problem is None else f"{self.name} (unavailable: {self.problem})"


@cache
def _extra_packages() -> dict[str, tuple[str, ...]]:
    """Extra -> the distributions it installs, from chainzoom's installed metadata (empty if unknown)."""
    try:
        requirements = importlib.metadata.requires("chainzoom") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    extras: dict[str, list[str]] = {}
    for requirement in requirements:
        marker = _EXTRA_MARKER.search(requirement)
        name = _NAME.match(requirement)
        if marker and name and name.group(0) != "chainzoom":
            extras.setdefault(marker.group(1), []).append(name.group(0))
    return {extra: tuple(names) for extra, names in extras.items()}


def missing_extra(entry: Entry) -> str | None:
    """Why ``entry``'s extra is not usable here (its install hint), or None."""
    if entry.extra is None:
        return None
    missing = []
    for package in _extra_packages().get(entry.extra, ()):
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        return f"needs {', '.join(missing)}: pip install 'chainzoom[{entry.extra}]'"
    return None


def choices(registry: Registry) -> list[Choice]:
    """Every entry of ``registry`` (built-in and plugins) as a :class:`Choice`; broken plugins too."""
    found = [
        Choice(entry.name, entry.description, entry.argument, entry.required, missing_extra(entry))
        for entry in registry
    ]
    found += [Choice(name, "a plugin", None, False, problem) for name, problem in registry.plugin_problems.items()]
    return found


def spec_of(choice: Choice, argument: str) -> str:
    """The registry spec of a choice and the user's argument (empty: none)."""
    argument = argument.strip()
    return f"{choice.name}:{argument}" if argument else choice.name


def check_choice(registry: Registry, spec: str) -> str | None:
    """What stops ``spec`` from running here, in one line, or None (facts only: nothing is loaded)."""
    from chainzoom.errors import ChainZoomError

    name = split_spec(spec)[0]
    choice = next((c for c in choices(registry) if c.name == name), None)
    if choice is None:
        return f"unknown {registry.kind} {name!r}"
    if choice.problem:
        return f"{registry.kind} {name}: {choice.problem}"
    try:
        registry.check(spec, {})
    except ChainZoomError as exc:
        return str(exc)
    return None
