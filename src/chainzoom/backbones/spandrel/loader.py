"""Import spandrel 0.4.2 without torchvision, and the registry of architectures chainzoom loads.

spandrel declares torchvision as a dependency, and ``import spandrel`` imports every
architecture. Two of them import torchvision at module level: LaMa (inpainting) takes
``InterpolationMode`` and ``rotate``, RestoreFormer (face restoration) takes
``normalize``; they call these only inside ``forward``. torchvision cannot be
installed beside chainzoom's pinned CPU torch (pip would replace torch with a
multi-GB CUDA build), so spandrel is installed with ``--no-deps``.

When a working torchvision is importable it is used. Otherwise a stand-in
``torchvision.transforms.functional`` is placed in ``sys.modules`` only for the
duration of ``import spandrel``: its ``InterpolationMode`` is an Enum and its
functions raise :class:`~chainzoom.errors.ChainZoomError` if they are ever called.
The stand-in is removed right after, so ``import torchvision`` anywhere else still
fails honestly. chainzoom loads models through :func:`sr_registry`, which holds
every architecture of spandrel's main registry except LaMa and RestoreFormer, so no
model that chainzoom loads can reach the stand-in. (spandrel's own ``MAIN_REGISTRY``
still lists them; code that bypasses chainzoom and runs such a model gets the
stand-in's one-line error, never a wrong result.)
"""

from __future__ import annotations

import enum
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from chainzoom.errors import ChainZoomError, one_line

if TYPE_CHECKING:
    from spandrel import ArchRegistry

#: The spandrel release whose import graph this module was written and tested against.
SPANDREL_VERSION = "0.4.2"
INSTALL_HINT = f"pip install einops && pip install --no-deps spandrel=={SPANDREL_VERSION}"

#: Architectures left out of :func:`sr_registry`: they import torchvision and are not
#: super-resolution. The value says what such a model is, for the error message.
EXCLUDED = {"LaMa": "an inpainting model", "RestoreFormer": "a face-restoration model"}

_STAND_IN_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
_IMPORT_LOCK = threading.Lock()


class InterpolationMode(enum.Enum):
    """The members of torchvision's enum, so LaMa's module can be defined (never run)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _unavailable(name: str) -> Callable[..., NoReturn]:
    def call(*args: object, **kwargs: object) -> NoReturn:
        raise ChainZoomError(
            f"torchvision.transforms.functional.{name} is not available: spandrel was imported without "
            "torchvision, so its LaMa and RestoreFormer architectures cannot run"
        )

    call.__name__ = name
    return call


def _stand_in_modules() -> dict[str, ModuleType]:
    root, transforms, functional = (ModuleType(name) for name in _STAND_IN_NAMES)
    # through the namespace dicts: a bare ModuleType declares none of these attributes
    vars(functional).update(
        InterpolationMode=InterpolationMode, rotate=_unavailable("rotate"), normalize=_unavailable("normalize")
    )
    vars(root)["transforms"] = transforms
    vars(transforms)["functional"] = functional
    return dict(zip(_STAND_IN_NAMES, (root, transforms, functional)))


@contextmanager
def torchvision_stand_in() -> Iterator[None]:
    """Provide the stand-in torchvision modules in ``sys.modules`` inside the block only."""
    taken = [name for name in _STAND_IN_NAMES if name in sys.modules]
    if taken:
        raise RuntimeError(f"{taken[0]} is already imported; the stand-in would hide it")
    sys.modules.update(_stand_in_modules())
    try:
        yield
    finally:
        for name in _STAND_IN_NAMES:
            sys.modules.pop(name, None)


def real_torchvision_available() -> bool:
    """True when torchvision imports; a torchvision that is installed but broken is a user error.

    A torchvision built for a different torch usually fails with a RuntimeError
    (``operator torchvision::nms does not exist``); spandrel cannot import beside it,
    and hiding it behind the stand-in would leave half-imported modules around.
    """
    try:
        import torchvision.transforms.functional  # noqa: F401
    except ImportError:
        return False
    except Exception as exc:  # any failure inside a broken install
        raise ChainZoomError(
            f"torchvision is installed but does not import ({one_line(exc)}); uninstall it or install the build "
            "that matches your torch: spandrel works with a working torchvision or with none"
        ) from exc
    return True


def import_spandrel() -> ModuleType:
    """Import spandrel (with the stand-in only if torchvision is absent) and return it."""
    with _IMPORT_LOCK:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        try:
            if real_torchvision_available():
                import spandrel
            else:
                with torchvision_stand_in():
                    import spandrel
        except ImportError as exc:
            raise ChainZoomError(
                f"the spandrel backbone cannot import spandrel ({exc}); install it with: {INSTALL_HINT}"
            ) from exc
        return spandrel


@functools.cache
def sr_registry() -> ArchRegistry:
    """spandrel's main registry without :data:`EXCLUDED`, in the same detection order."""
    spandrel = import_spandrel()
    registry = spandrel.ArchRegistry()
    registry.add(*(s for s in spandrel.MAIN_REGISTRY if s.architecture.id not in EXCLUDED))
    return registry


def excluded_match(state_dict: dict) -> str | None:
    """The excluded architecture ``state_dict`` belongs to, if any (detection reads keys only)."""
    spandrel = import_spandrel()
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.architecture.id in EXCLUDED and support.detect(state_dict):
            return support.architecture.id
    return None
