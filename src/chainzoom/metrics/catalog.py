"""The no-reference metrics ``chainzoom eval`` knows, and which of them can run here.

A metric that cannot run (a package missing, weights not loadable) becomes an
:class:`Unavailable` entry with its reason, which the report prints; it never gets a
value from anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chainzoom.errors import ChainZoomError


@dataclass(frozen=True)
class Metric:
    """A no-reference metric: ``score(rgb [H, W, 3] in [0, 1]) -> float`` (``nan`` when it does not apply)."""

    name: str
    label: str
    better: str | None  # "lower", "higher", or None for descriptive statistics
    score: Callable[[np.ndarray], float]
    min_side: int = 1  # smaller images score nan


@dataclass(frozen=True)
class Unavailable:
    name: str
    label: str
    reason: str


#: name -> (label, direction), in report order. The paper's four first.
NO_REFERENCE = {
    "niqe": ("NIQE", "lower"),
    "musiq": ("MUSIQ", "higher"),
    "maniqa": ("MANIQA", "higher"),
    "clipiqa": ("CLIPIQA", "higher"),
    "brisque": ("BRISQUE", "lower"),
    "sharpness": ("Sharpness (Laplacian variance)", None),
    "entropy": ("Entropy (bits)", None),
}


def parse_metric_names(text: str | None) -> list[str]:
    """``"niqe,brisque"`` -> names, checked; ``None`` or ``"all"`` -> every known metric."""
    if text is None or text == "all":
        return list(NO_REFERENCE)
    names = [n.strip() for n in text.split(",") if n.strip()]
    return checked_names(names, list(NO_REFERENCE), text, "--metrics", "metric", also="all")


def checked_names(
    names: list[str], known: Sequence[str], text: str, flag: str, kind: str, also: str | None = None
) -> list[str]:
    """``names`` parsed from ``flag``'s ``text``, refused when empty or naming an unknown ``kind``.

    ``also`` is a value the flag accepts alone (``all``), listed in the message only.
    """
    if not names:
        raise ChainZoomError(f"{flag} names no {kind}: {text!r}")
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join([also, *known] if also else known)
        raise ChainZoomError(f"unknown {kind} {', '.join(unknown)} (known: {listed})")
    return names


def _loader(name: str, device: str) -> tuple[Callable[[np.ndarray], float], int]:
    """The metric's scorer and the smallest side it scores; its model files are checked now,
    so a missing one is reported before any run."""
    if name == "niqe":
        from chainzoom.metrics import niqe

        niqe.pristine_model()
        return niqe.niqe, niqe.MIN_SIDE
    if name == "brisque":
        from chainzoom.metrics import brisque_score

        brisque_score.bundled_model()
        return brisque_score.brisque, brisque_score.MIN_SIDE
    if name == "sharpness":
        from chainzoom.metrics.statistics import sharpness

        return sharpness, 1
    if name == "entropy":
        from chainzoom.metrics.statistics import entropy

        return entropy, 1
    from chainzoom.metrics.pyiqa_metrics import load_pyiqa_metric

    return load_pyiqa_metric(name, device), 1


def load_metrics(names: Sequence[str], device: str = "cpu") -> tuple[list[Metric], list[Unavailable]]:
    """The metrics among ``names`` that can run here, and the others with the reason why not."""
    from chainzoom.metrics.brisque_score import BrisqueUnavailable
    from chainzoom.metrics.niqe import NiqeUnavailable
    from chainzoom.metrics.pyiqa_metrics import PyiqaUnavailable

    ready: list[Metric] = []
    missing: list[Unavailable] = []
    for name in names:
        label, better = NO_REFERENCE[name]
        try:
            ready.append(Metric(name, label, better, *_loader(name, device)))
        except (NiqeUnavailable, BrisqueUnavailable, PyiqaUnavailable) as exc:
            missing.append(Unavailable(name, label, str(exc)))
    return ready, missing
