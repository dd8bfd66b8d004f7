"""Full-image runs for tests that need one made quickly, with bare objects: one shared helper."""

from __future__ import annotations

import json
from pathlib import Path

from chainzoom.backbones.base import Backbone
from chainzoom.config import FullConfig
from chainzoom.io.images import LoadedImage
from chainzoom.job import resolve_job
from chainzoom.prompts.base import Prompter
from chainzoom.runs.executors import LocalExecutor
from chainzoom.runs.full import zoom_full
from chainzoom.runtime import Runtime


def make_full_run(
    image: LoadedImage,
    out: Path,
    backbone: Backbone,
    prompter: Prompter | None,
    *,
    levels: int,
    fmt: str,
    tile: int = 512,
    overlap: int = 160,
    request: dict,
    overwrite: bool = False,
) -> dict:
    """:func:`zoom_full` of a job made for these arguments, its tiles made here by ``backbone``.

    ``request`` stands for the input's identity: runs of different requests are different runs.
    """
    config = FullConfig(
        out=str(out),
        scale=float(backbone.scale**levels),
        format=fmt,
        consistency="none",
        overwrite=overwrite,
        runtime=Runtime(device="cpu"),
    )
    job = resolve_job(config, config.runtime, json.dumps(request, sort_keys=True), "<in memory>")
    return zoom_full(image, job, LocalExecutor(backbone, prompter), tile=tile, overlap=overlap)
