"""chainzoom: extreme single-image super-resolution by Chain-of-Zoom.

``import chainzoom`` stays light (no torch); the API is loaded on first use::

    import chainzoom
    states = chainzoom.zoom("photo.jpg", scale=256, center=(0.62, 0.40))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"zoom": "chainzoom.api", "ScaleState": "chainzoom.core.states", "plan_zoom": "chainzoom.core.geometry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'chainzoom' has no attribute {name!r}")


__all__ = ["ScaleState", "__version__", "plan_zoom", "zoom"]
