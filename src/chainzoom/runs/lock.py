"""An exclusive lock on a run folder, so two processes never write the same run.

The lock is an ``flock`` on ``.chainzoom.lock`` in the folder, held for the whole run
and released by the kernel when the process dies (a killed run never leaves a stale
lock behind, only an unlocked file that the next run takes). The file records the
holder's pid, so a second process can say who it is waiting for. Temporary files are
cleaned up only under the lock: a live run's half-written file is never deleted by
another process.

A run that ends removes the lock file, so a finished folder holds only the run's files.
Deleting a lock file is the classic ``flock`` race: a lock belongs to an inode, not to
a name. Were the holder to unlink the file after another process opened it but before
that process locked it, the second process would lock the orphaned inode while a third
creates a new file at the name and locks that: two "holders" at once. Two rules close it:

* :meth:`RunLock.acquire` checks, once it holds the ``flock``, that the name still refers
  to the inode it locked (``os.stat`` against ``os.fstat``), and starts again if not:
  a lock on an unlinked file is worth nothing.
* :meth:`RunLock.release` unlinks the file *before* closing the descriptor, while it
  still holds the ``flock``: whoever opened the old inode can lock it only after the
  unlink, and then sees the name gone or pointing elsewhere. Closing first would let a
  process lock the old inode, pass its check, and lose its file to our unlink.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from chainzoom.errors import RunFolderError

LOCK_FILE = ".chainzoom.lock"
#: Times :meth:`RunLock.acquire` starts again when the file it locked was replaced; only
#: other runs ending between its open and its check do that, so this is never reached
#: unless the file system's inode numbers cannot be trusted.
ACQUIRE_TRIES = 100


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock, or raises :class:`RunFolderError` at once."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        for _ in range(ACQUIRE_TRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                current = self._names(fd)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"{self.path.parent} is in use by another chainzoom process (pid {holder}); "
                    "wait for it to finish or use another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if current:
                break
            os.close(fd)  # its holder removed it on release (see the module's docstring): lock the file there now
        else:
            raise RunFolderError(f"cannot lock {self.path}: the file keeps being replaced")
        self._fd = fd  # held from here: a failed write below is released like any run's end
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see the module's docstring)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Only the file this lock holds: one that was removed by hand and made again is another run's.
            if self._names(fd):
                os.unlink(self.path)
        except OSError:  # a folder made read-only meanwhile: leave an empty, unlocked file
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def _names(self, fd: int) -> bool:
        """Whether :attr:`path` is the file open as ``fd`` (not removed, not replaced)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
