"""The run folder's lock: held alone, its file gone once released, never split across two inodes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chainzoom.errors import RunFolderError
from chainzoom.runs import lock as lock_module
from chainzoom.runs.lock import LOCK_FILE, RunLock

SRC = str(Path(lock_module.__file__).resolve().parents[2])


def test_released_lock_leaves_no_file(tmp_path: Path) -> None:
    with RunLock(tmp_path) as held:
        assert held.held and (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
    assert not held.held
    assert list(tmp_path.iterdir()) == []


def test_a_lock_taken_on_a_file_its_holder_removed_is_taken_again_on_the_new_one(tmp_path, monkeypatch) -> None:
    """The flock race: opened before the holder's release unlinked the file, locked after."""
    first = RunLock(tmp_path)
    first.acquire()
    real_open = os.open
    orphans: list[int] = []

    def open_then_holder_ends(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if not orphans:
            first.release()  # the holder ends between this open and the flock
            orphans.append(os.fstat(fd).st_nlink)  # 0: this open got the file the holder removed
        return fd

    monkeypatch.setattr(lock_module.os, "open", open_then_holder_ends)
    second = RunLock(tmp_path)
    second.acquire()
    monkeypatch.undo()
    # The lock is on the file the name refers to, not on the orphan the first open got...
    named, held = os.stat(tmp_path / LOCK_FILE), os.fstat(second._fd)  # type: ignore[arg-type]
    assert (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
    assert orphans == [0]
    # ...so a third process is refused, not handed a second lock on a new file.
    with pytest.raises(RunFolderError, match="in use by another chainzoom process"):
        RunLock(tmp_path).acquire()
    second.release()
    assert list(tmp_path.iterdir()) == []


def test_a_file_removed_by_hand_and_made_again_is_not_removed_by_the_old_holder(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    (tmp_path / LOCK_FILE).unlink()
    with RunLock(tmp_path):
        first.release()  # must not unlink the second holder's file
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
    assert list(tmp_path.iterdir()) == []


CONTENDER = """
import os, sys, time
from pathlib import Path
from chainzoom.errors import RunFolderError
from chainzoom.runs.lock import RunLock

folder, rounds = Path(sys.argv[1]), int(sys.argv[2])
held = 0
while held < rounds:
    lock = RunLock(folder)
    try:
        lock.acquire()
    except RunFolderError:
        continue
    # Holding the lock: no one else may. O_EXCL fails if another holder's marker is there.
    marker = os.open(folder / "holder", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(marker)
    time.sleep(0.0005)
    os.unlink(folder / "holder")
    lock.release()
    held += 1
"""


def test_processes_taking_and_releasing_the_lock_never_hold_it_together(tmp_path: Path) -> None:
    """Three processes take and release the lock (and remove its file) over and over: never two holders."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    script = textwrap.dedent(CONTENDER)
    contenders = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "150"], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in contenders]
    assert [p.returncode for p in contenders] == [0, 0, 0], errors
    assert list(tmp_path.iterdir()) == []


def test_a_live_process_is_named_and_its_lock_is_free_once_it_exits(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from chainzoom.runs.lock import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.readline()",
            str(tmp_path),
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(RunFolderError, match=rf"in use by another chainzoom process \(pid {holder.pid}\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.communicate(b"\n", timeout=60)
    assert holder.returncode == 0
    assert list(tmp_path.iterdir()) == []
    with RunLock(tmp_path):
        pass
