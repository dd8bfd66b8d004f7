"""Typed, checked options for prompter factories.

A prompter's options arrive from two places: the spec string
(``vlm:PATH,max_new_tokens=16``, all strings) and keyword arguments from the CLI or
the Python API (already typed; ``None`` means "not given"). :class:`Options` merges
them, converts each value once with a one-line :class:`ChainZoomError` on a bad one,
and refuses unknown names, so a typo such as ``max_new_token=16`` fails loudly
instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from chainzoom.errors import ChainZoomError
from chainzoom.prompts.message import OFFICIAL_MAX_NEW_TOKENS
from chainzoom.registry import split_options
from chainzoom.secrets import redact_spec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Options:
    """Options for one component; read each with a typed getter, then call :meth:`finish`."""

    def __init__(self, owner: str, from_spec: Mapping[str, str], given: Mapping[str, Any]) -> None:
        self.owner = owner
        self._values: dict[str, Any] = dict(from_spec)
        for key, value in given.items():
            if value is None:
                continue
            if key in self._values and str(self._values[key]) != str(value):
                raise ChainZoomError(
                    f"{owner}: option {key} is given twice "
                    f"({redact_spec(str(self._values[key]))!r} in the spec, {redact_spec(str(value))!r} as a flag)"
                )
            self._values[key] = value
        self._known: list[str] = []

    @classmethod
    def parse(cls, owner: str, argument: str | None, given: Mapping[str, Any]) -> tuple[str | None, Options]:
        """Split ``"TARGET,key=value,..."`` and merge it with keyword options."""
        target, from_spec = split_options(argument)
        return target, cls(owner, from_spec, given)

    def _take(self, key: str) -> Any:
        self._known.append(key)
        return self._values.pop(key, None)

    @overload
    def text(self, key: str, default: str) -> str: ...
    @overload
    def text(self, key: str, default: str | None = None) -> str | None: ...
    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._take(key)
        return default if value is None else str(value)

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        value = self._take(key)
        if value is None:
            return default
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ChainZoomError(f"{self.owner}: {key} must be a whole number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise ChainZoomError(f"{self.owner}: {key} must be at least {minimum}, got {number}")
        return number

    @overload
    def number(self, key: str, default: float, minimum: float | None = None) -> float: ...
    @overload
    def number(self, key: str, default: float | None, minimum: float | None = None) -> float | None: ...
    def number(self, key: str, default: float | None, minimum: float | None = None) -> float | None:
        value = self._take(key)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ChainZoomError(f"{self.owner}: {key} must be a number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise ChainZoomError(f"{self.owner}: {key} must be at least {minimum}, got {number}")
        return number

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ChainZoomError(f"{self.owner}: {key} must be true or false, got {value!r}")

    def decoding(self, seed: int, temperature_minimum: float) -> dict[str, Any]:
        """The decoding options every model-based prompter shares, under one set of names.

        ``max_tokens`` defaults to the official 32; a local model samples only at a positive
        temperature, a server accepts 0 (greedy), hence ``temperature_minimum``.
        """
        return {
            "max_tokens": self.integer("max_tokens", OFFICIAL_MAX_NEW_TOKENS, minimum=1),
            "sample": self.flag("sample"),
            "temperature": self.number("temperature", 1.0, minimum=temperature_minimum),
            "top_p": self.number("top_p", 1.0, minimum=1e-6),
            "seed": self.integer("seed", seed),
            "text": self.text("text"),
        }

    def finish(self) -> None:
        """Refuse any option nobody asked for (a typo, or an option of another prompter)."""
        if self._values:
            unknown = ", ".join(sorted(self._values))
            known = ", ".join(self._known)
            raise ChainZoomError(f"{self.owner}: unknown option(s) {unknown} (known: {known})")
