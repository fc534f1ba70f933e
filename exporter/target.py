"""The artifact folder's life: checked, locked, written beside, swapped in, and its leftovers removed.

An export writes into the hidden folder `.NAME.partial-PID` beside the target NAME and renames it at
the end; while it runs it holds the OS lock `.NAME.export-lock`, so a second export to NAME is
refused instead of deleting the first one's work. A killed export leaves its partial folder behind:
any later export into the same parent folder removes such leftovers once their process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskSpaceError, ExportError, TargetBusyError, TargetFolderError
from .file_lock import FileLock, try_lock

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.export-lock$")


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"


def lock_path(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.export-lock"


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a target that cannot become an artifact folder, before any work; create its parent."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TargetFolderError(f"{out_dir} is a file, not a folder. Choose another name for the converted model.")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise TargetFolderError(f"Cannot create {out_dir}: {blocker} is a file, not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} already exists and is not empty (use overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def locked_target(out_dir: Path) -> Iterator[FileLock]:
    """Hold the target's lock for the block; TargetBusyError if another conversion holds it."""
    lock = try_lock(lock_path(out_dir))
    if lock is None:
        raise TargetBusyError(
            f"{out_dir} is being written by another conversion right now. Wait until it "
            "has finished, or choose another folder."
        )
    with lock:
        yield lock


def clean_stale(parent: Path, own_target: Path | None = None) -> list[Path]:
    """Remove what killed exports left in `parent`; never the folder of an export still running.

    A leftover goes only when its process is gone and no export holds its target's lock now
    (`own_target` is the caller's, whose lock it already holds). An `.old` folder is a model that a
    killed export had moved aside to swap in the new one: it is put back if nothing replaced it.
    """
    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        leftover, stale_lock = _LEFTOVER.match(entry.name), _LOCK.match(entry.name)
        if leftover and (int(leftover["pid"]) == os.getpid() or pid_alive(int(leftover["pid"]))):
            continue
        if not (leftover or stale_lock):
            continue
        target = parent / (leftover or stale_lock)["name"]
        if own_target is not None and target == own_target:
            if leftover and _remove_leftover(entry, target, leftover["kind"]):
                removed.append(entry)
            continue
        try:
            lock = try_lock(lock_path(target))
        except OSError:
            continue
        if lock is None:
            continue  # an export to that name is running
        with lock:  # releasing it removes a stale lock file too
            if leftover and _remove_leftover(entry, target, leftover["kind"]):
                removed.append(entry)
    return removed


def _remove_leftover(entry: Path, target: Path, kind: str) -> bool:
    """Best effort: a leftover that cannot be removed now only costs disk space until the next try."""
    try:
        if kind == "old" and not target.exists():
            os.replace(entry, target)
        else:
            shutil.rmtree(entry)
    except OSError:
        return False
    return True


def replace_target(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place; an existing export is swapped out only now."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def pid_alive(pid: int) -> bool:
    """True if a process with this id runs (or may run: when in doubt, its folder is kept)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return not ok or code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: someone else's process
    return True


def explain_write_error(error: OSError, out_dir: Path) -> ExportError:
    """One line for a failed write into the target's folder (nothing of the export is kept)."""
    where = out_dir.parent
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(
            f"The disk holding {where} is full: the conversion stopped and what it had "
            "written was removed. Free some space or choose another folder."
        )
    if error.errno == errno.EROFS:
        return TargetFolderError(f"Cannot write into {where}: it is on a read-only disk. Choose another folder.")
    if error.errno in (errno.EACCES, errno.EPERM):
        return TargetFolderError(f"Cannot write into {where}: permission denied. Choose a folder you can write to.")
    name = f" {error.filename}" if error.filename else ""
    return TargetFolderError(f"Cannot write{name}: {error.strerror or error}.")
