"""Loading the Ray executor (``--executor ray``) only when asked, with one line when Ray is missing.

Kept apart from :mod:`chainzoom.runs.executors`, which the Ray executor itself imports, so
that the import only ever runs one way.
"""

from __future__ import annotations

from types import ModuleType

from chainzoom.errors import OptionError


def load_ray_executor() -> ModuleType:
    """The Ray executor's module, or one line saying how to install Ray."""
    try:
        from chainzoom.runs import ray_executor
    except ImportError as exc:
        raise OptionError(
            "executor", f"ray needs the ray package ({exc}); install it with: pip install 'chainzoom[ray]'"
        ) from None
    return ray_executor


def check_ray(address: str | None) -> None:
    """Ray is installed and something answers at the address: checked before any progress bar."""
    module = load_ray_executor()
    module.check_address(module.resolve_address(address))
