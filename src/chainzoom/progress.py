"""Progress bars for long runs: one line per image, advancing per scale-state."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .states import ScaleState


class ZoomProgress:
    """A rich progress display on stderr; silent when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            if enabled
            else None
        )
        self.task = None
        self.batch = None

    def __enter__(self) -> ZoomProgress:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_batch(self, images: int) -> None:
        """An overall bar, shown only when there is more than one image."""
        if self.progress is not None and images > 1:
            self.batch = self.progress.add_task("images", total=images, detail="")

    def start(self, name: str, states: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(name, total=states, detail="")

    def advance(self, state: ScaleState) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, detail=f"x{state.magnification:g}")

    def finish(self, out: Path) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, detail=f"done -> {out}")
            if self.batch is not None:
                self.progress.update(self.batch, advance=1)
        elif self.progress is None:
            print(f"{out}", file=sys.stdout)
