"""Progress bars for long runs: per image and scale-state, or per level and tile (full-image mode)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from chainzoom.core.states import ScaleState


class _Bars:
    """A rich progress display on stderr (silent when disabled), usable as a context manager."""

    def __init__(self, enabled: bool, *columns) -> None:
        self.console = Console(stderr=True)
        self.progress = (
            Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *columns, console=self.console
            )
            if enabled
            else None
        )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class ZoomProgress(_Bars):
    """One bar per image, advancing per scale-state, and an overall bar for batches.

    Each run asks for its own bar (:meth:`add`) and keeps its id, so runs made at the same
    time (a Ray batch) each advance their own; rich's Progress is safe to update from
    several threads. Without bars (``--quiet``) each finished run's folder is printed.
    """

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(enabled, TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
        self.batch: TaskID | None = None

    def start_batch(self, images: int) -> None:
        """An overall bar, shown only when there is more than one image."""
        if self.progress is not None and images > 1:
            self.batch = self.progress.add_task("images", total=images, detail="")

    def add(self, name: str, states: int) -> TaskID | None:
        """A new bar for one run; its id goes to :meth:`step` and :meth:`done`."""
        return self.progress.add_task(name, total=states, detail="") if self.progress is not None else None

    def step(self, task: TaskID | None, state: ScaleState) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, advance=1, detail=f"x{state.magnification:g}")

    def done(self, task: TaskID | None, out: Path) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, detail=f"done -> {out}")
            if self.batch is not None:
                self.progress.update(self.batch, advance=1)
        elif self.progress is None:
            print(f"{out}", file=sys.stdout)


class TileProgress(_Bars):
    """Full-image mode: one bar per level, advancing per tile."""

    def __init__(self, name: str, levels: int, enabled: bool = True) -> None:
        super().__init__(enabled, TimeElapsedColumn(), TimeRemainingColumn())
        self.name = name
        self.levels = levels
        self.tasks: dict[int, TaskID] = {}

    def update(self, level: int, done: int, total: int) -> None:
        if self.progress is None:
            return
        if level not in self.tasks:
            label = f"{self.name} level {level}/{self.levels} tiles"
            self.tasks[level] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[level], completed=done)
