"""MUSIQ, MANIQA and CLIPIQA through pyiqa, the learned metrics of the paper's table.

Their weights cannot ship with chainzoom, and pyiqa itself is not a dependency: it
declares torchvision (which replaces a CPU torch with a multi-GB CUDA build) and its
licence is non-commercial (its weights repository, chaofengc/IQA-PyTorch-Weights, is
CC BY-NC-SA 4.0). So these run only when the user installed pyiqa and its weights can
be loaded (downloaded or cached); otherwise they are reported as not available, with
the reason, and never estimated some other way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Our metric name -> (pyiqa metric name, direction). MANIQA is the PIPAL-trained model,
#: the one OSEDiff's and Chain-of-Zoom's evaluation code name.
PYIQA_METRICS = {
    "musiq": ("musiq", "higher"),
    "maniqa": ("maniqa-pipal", "higher"),
    "clipiqa": ("clipiqa", "higher"),
}


class PyiqaUnavailable(RuntimeError):
    """pyiqa is not installed, or the metric's weights could not be loaded."""


def load_pyiqa_metric(name: str, device: str = "cpu") -> Callable[[np.ndarray], float]:
    """A scorer for ``name`` (see :data:`PYIQA_METRICS`) or :class:`PyiqaUnavailable` saying why not."""
    try:
        import pyiqa
    except ImportError:
        raise PyiqaUnavailable("pyiqa is not installed (optional, non-commercial licence)") from None
    import torch

    try:
        model = pyiqa.create_metric(PYIQA_METRICS[name][0], device=torch.device(device), as_loss=False)
    except Exception as exc:  # pyiqa raises whatever its download or loader raises
        raise PyiqaUnavailable(f"pyiqa could not load {PYIQA_METRICS[name][0]}: {' '.join(str(exc).split())}") from None

    def score(rgb: np.ndarray) -> float:
        tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            return float(model(tensor.to(device)).item())

    return score
