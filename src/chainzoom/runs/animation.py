"""The zoom animation (``zoom.webp``), encoded step by step as the states arrive.

Each step's frames are rendered and encoded as soon as its state exists (libwebp's
incremental animation encoder, through the ``webp`` package), so after the last step
only that step's frames and the container remain. The frames are those of
:func:`chainzoom.runs.render.zoom_frames`, planned from the plan's boxes.

``background=True`` (what run folders use) does the work on a thread, as libwebp's
calls release the GIL: on a GPU run the CPU would idle meanwhile. On a 2-core CPU the
thread competes with torch's and the gain is within the noise (docs/performance.md).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from chainzoom.core.states import ScaleState
from chainzoom.errors import ChainZoomError
from chainzoom.io.atomic import atomic_write
from chainzoom.io.images import to_pil
from chainzoom.io.marking import webp_with_xmp
from chainzoom.runs.render import FramePlan, Placed, RenderError, zoom_frames

#: Lossy WebP at quality 80, as the animation always was; method 2 encodes about twice as
#: fast as libwebp's default 4 for a slightly larger file.
QUALITY = 80
METHOD = 2
FPS = 24


class AnimationWriter:
    """Feed it the states in order (:meth:`add`), then :meth:`close` writes the file atomically.

    With ``background`` the work happens on a daemon thread and an error there is raised
    by :meth:`close`; otherwise :meth:`add` does it at once. :meth:`abort` stops without
    writing anything.
    """

    def __init__(
        self,
        path: str | Path,
        placed: Sequence[Placed],
        frames_per_step: int = 24,
        fps: int = FPS,
        size: tuple[int, int] | None = None,
        background: bool = False,
        xmp: bytes | None = None,
    ) -> None:
        if fps <= 0:
            raise RenderError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        #: The provenance packet, added to the file's container when it is written.
        self.xmp = xmp
        self.plan = FramePlan(placed, frames_per_step, size)
        self.duration = max(1, round(1000 / fps))
        self._queue: queue.Queue[tuple[int, Image.Image] | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._encoder: Any = None
        self._config: Any = None
        self._previous: Image.Image | None = None
        self._frames = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._work, name="chainzoom-animation", daemon=True)
            self._thread.start()

    def add(self, state: ScaleState) -> None:
        """State ``state.index`` is made: render and encode the frames it completes."""
        if self._thread is None:
            self._encode(state.index, to_pil(state.image))
        else:
            self._queue.put((state.index, to_pil(state.image)))

    def close(self) -> Path:
        """Wait for the frames, then write the animation; raises what went wrong in the thread."""
        self._join()
        if self._failure is not None:
            raise self._failure
        if self._frames != self.plan.total:
            raise ChainZoomError(f"{self.path}: {self._frames} of {self.plan.total} frames were made")
        data = bytes(self._encoder.assemble(self._frames * self.duration).buffer())
        if self.xmp is not None:  # libwebp's animation encoder writes no metadata: added to the container
            data = webp_with_xmp(data, self.xmp)
        return atomic_write(self.path, lambda tmp: tmp.write_bytes(data))

    def abort(self) -> None:
        self._stop.set()
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _encode(self, index: int, current: Image.Image) -> None:
        import webp

        if self._encoder is None:
            self._config = webp.WebPConfig.new(quality=QUALITY, method=METHOD)
            self._encoder = webp.WebPAnimEncoder.new(*self.plan.size)
        for frame in self.plan.frames(index, self._previous, current):
            picture = webp.WebPPicture.from_pil(frame.convert("RGB"))
            self._encoder.encode_frame(picture, self._frames * self.duration, self._config)
            self._frames += 1
        self._previous = current

    def _work(self) -> None:
        try:
            while (item := self._queue.get()) is not None and not self._stop.is_set():
                self._encode(*item)
        except BaseException as exc:  # handed to close(), in the caller's thread
            self._failure = exc
            while self._queue.get() is not None:  # drain, so add() never blocks a dead writer
                pass


def save_animation(
    states: Sequence[ScaleState],
    path: str | os.PathLike[str],
    frames_per_step: int = 24,
    fps: int = FPS,
    size: tuple[int, int] | None = None,
    xmp: bytes | None = None,
) -> Path:
    """Write :func:`~chainzoom.runs.render.zoom_frames` as an animation that loops forever, atomically.

    ``.webp``: animated, lossy, quality 80 (:class:`AnimationWriter`, here fed all at
    once), with the provenance packet ``xmp`` in its container. ``.gif``: a palette per
    frame, and no marking (GIF has no XMP that readers agree on). Any other suffix is refused.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".webp", ".gif"):
        raise RenderError(f"animation format is chosen by the suffix: use .webp or .gif, got {target.name!r}")
    if fps <= 0:
        raise RenderError(f"fps must be positive, got {fps}")
    if suffix == ".webp":
        writer = AnimationWriter(target, states, frames_per_step, fps, size, xmp=xmp)
        for state in states:
            writer.add(state)
        return writer.close()
    # A palette per frame; the fast octree quantizer is ~50x faster than the default
    # median cut on RGB frames.
    frames = [
        f.quantize(255, method=Image.Quantize.FASTOCTREE)
        for f in zoom_frames(states, frames_per_step=frames_per_step, size=size)
    ]
    duration = max(1, round(1000 / fps))
    options: dict[str, Any] = dict(
        save_all=True, append_images=frames[1:], duration=duration, loop=0, optimize=False, disposal=1
    )
    return atomic_write(target, lambda tmp: frames[0].save(tmp, **options))
