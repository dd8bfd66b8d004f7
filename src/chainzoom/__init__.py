"""chainzoom: extreme single-image super-resolution by Chain-of-Zoom.

``import chainzoom`` stays light (no torch); the API is loaded on first use::

    import chainzoom
    cz = chainzoom.ChainZoom(backbone="realesrgan", runtime=chainzoom.Runtime(device="auto"))
    result = cz("photo.jpg", scale=256, center=(0.62, 0.40))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"

_LAZY = {
    "ChainZoom": "chainzoom.api",
    "ZoomResult": "chainzoom.api",
    "zoom": "chainzoom.api",
    "Runtime": "chainzoom.runtime",
    "ModelConfig": "chainzoom.config",
    "ZoomConfig": "chainzoom.config",
    "FullConfig": "chainzoom.config",
    "EvalConfig": "chainzoom.config",
    "AlignConfig": "chainzoom.config",
    "ChainZoomError": "chainzoom.errors",
    "OptionError": "chainzoom.errors",
    "ConfigError": "chainzoom.errors",
    "InputError": "chainzoom.errors",
    "ModelError": "chainzoom.errors",
    "OutOfMemoryError": "chainzoom.errors",
    "RunFolderError": "chainzoom.errors",
    "ScaleState": "chainzoom.core.states",
    "plan_zoom": "chainzoom.core.geometry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'chainzoom' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
