"""Atomic file writes: a reader never sees a half-written output.

Every output goes to a temporary file in the same folder and is renamed over the
target only once complete, so an interrupted run leaves either the old file or the
new one, never a truncated one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainzoom.errors import RunFolderError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path``.

    An ``OSError`` (a full disk, say) leaves no temporary file and becomes a one-line
    :class:`~chainzoom.errors.RunFolderError`.

    The temporary name keeps the target's suffix, so writers that pick a format
    from the extension (Pillow, pyvips) still do.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=target.suffix + ".tmp" + target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates 0600 files; outputs get the permissions any new file would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:  # disk full, quota, permissions: the user's to fix, in one line
        tmp.unlink(missing_ok=True)
        raise RunFolderError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
