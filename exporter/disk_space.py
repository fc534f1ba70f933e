"""Is there room on the disk? One check and one wording for the download, the export and the wizard."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import DiskSpaceError
from .units import human_bytes


def existing_parent(path: str | Path) -> Path:
    """`path`, or its nearest parent that exists: the folder whose disk a not yet created one lands on."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def shortage_message(where: Path, what: str, needed: int, free: int, plural: bool = False) -> str:
    """What needs how much on the disk at `where`, how much is free, and what to do about it."""
    return (
        f"Not enough free disk space on {where}: {what} {'need' if plural else 'needs'} {human_bytes(needed)}, "
        f"only {human_bytes(free)} is free. Free up {human_bytes(needed - free)} or choose another folder."
    )


def check_free_space(path: str | Path, needed: int, what: str) -> None:
    """Raise DiskSpaceError unless the disk holding `path` (or its nearest existing parent) has `needed` bytes free."""
    folder = existing_parent(path)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(shortage_message(folder, what, needed, free))
