"""An exclusive lock on a run folder, so two processes never write the same run.

The lock is an ``flock`` on ``.chainzoom.lock`` in the folder, held for the whole run
and released by the kernel when the process dies (a killed run never leaves a stale
lock behind). The file records the holder's pid, so a second process can say who it
is waiting for. Temporary files are cleaned up only under the lock: a live run's
half-written file is never deleted by another process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from chainzoom.errors import RunFolderError

LOCK_FILE = ".chainzoom.lock"


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock, or raises :class:`RunFolderError` at once."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent} is in use by another chainzoom process (pid {holder}); "
                "wait for it to finish or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
