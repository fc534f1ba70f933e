"""An exclusive OS lock on a small file: taken without waiting, gone when its process dies.

flock (POSIX) and msvcrt.locking (Windows) locks belong to an open file and the OS drops them when
the process ends, however it ends, so a killed export never leaves its folder locked. The file is
removed on release while still locked, so nothing stays behind; whoever opened it just before then
finds, after locking, that the path no longer names their file, and starts over.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """A held lock; use `try_lock` to get one. Also a context manager that releases it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            os.unlink(self.path)  # POSIX: still locked, so no one else can hold this file now
        except OSError:
            pass  # Windows refuses while the file is open: removed below once closed
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = -1
        if sys.platform == "win32":
            try:
                os.unlink(self.path)
            except OSError:
                pass  # another process opened it meanwhile; it removes it in turn

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_lock(path: Path) -> FileLock | None:
    """Lock `path` (created if needed), or None at once if another holder has it.

    Another open file in this same process counts as another holder, as it should: two exports
    in one process must not share a folder either. OSError (a read-only folder, say) propagates.
    """
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            return FileLock(path, fd)
        _unlock(fd)  # the previous holder removed this file between our open and our lock
        os.close(fd)
