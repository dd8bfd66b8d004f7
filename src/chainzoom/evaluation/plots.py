"""Figures of an evaluation: a metric against magnification per mode, and a sample grid per image.

Matplotlib's object API (``Figure``) is used rather than ``pyplot``, so no global
backend is switched and nothing needs a display; every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from chainzoom.io.atomic import atomic_write
from chainzoom.io.images import to_pil

THUMBNAIL = 200


def _save(figure, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100))


def plot_metric(
    title: str,
    modes: Sequence[str],
    scales: Sequence[int],
    stats: dict[tuple[str, int], tuple[float, float, int]],
    path: Path,
) -> None:
    """One line per mode through ``stats[(mode, scale)] = (mean, std, n)``, error bars of one std."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for mode in modes:
        points = [(s, *stats[(mode, s)][:2]) for s in scales if (mode, s) in stats]
        if not points:
            continue
        x, mean, std = (np.array(v, dtype=float) for v in zip(*points))
        axes.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=mode)
    axes.set_xscale("log", base=4)
    axes.set_xticks(list(scales), [f"x{s}" for s in scales])
    axes.minorticks_off()
    axes.set_xlabel("magnification")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def thumbnail(image: torch.Tensor) -> np.ndarray:
    """A state ``[3, H, W]`` as an 8-bit ``[h, w, 3]`` array at most :data:`THUMBNAIL` px a side."""
    picture = to_pil(image)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    return np.asarray(picture)


def sample_grid(name: str, samples: dict[str, dict[int, np.ndarray]], scales: Sequence[int], path: Path) -> None:
    """One image's thumbnails (see :func:`thumbnail`): a row per mode, a column per magnification.

    A mode without a state at some magnification (an adaptive chain that stopped) leaves its cell empty.
    """
    from matplotlib.figure import Figure

    modes = list(samples)
    height, width = next(t for cells in samples.values() for t in cells.values()).shape[:2]
    cell = 2.2  # inches per thumbnail column
    figure = Figure(figsize=(cell * len(scales), cell * height / width * len(modes) + 0.6), layout="constrained")
    axes = figure.subplots(len(modes), len(scales), squeeze=False)
    for row, mode in enumerate(modes):
        for column, scale in enumerate(scales):
            ax = axes[row, column]
            if scale in samples[mode]:
                ax.imshow(samples[mode][scale])
            else:
                ax.text(0.5, 0.5, "stopped", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"x{scale}")
            if column == 0:
                ax.set_ylabel(mode)
    figure.suptitle(name)
    _save(figure, path)
