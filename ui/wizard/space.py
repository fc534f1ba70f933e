"""Free-disk-space arithmetic for the choose page: what goes where, and does it fit (Qt-free).

The download lands in the Hugging Face cache and the converted model in the target folder; these can
be on different disks, so the needs are added up per disk before comparing with its free space.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from exporter.disk_space import existing_parent, shortage_message

from .units import human_bytes


@dataclass(frozen=True)
class SpaceNeed:
    what: str  # "the download", "the converted model"
    folder: Path  # where it will be written; need not exist yet
    nbytes: int


@dataclass(frozen=True)
class Disk:
    """One disk that something will be written to: its free space and what it must hold."""

    anchor: Path  # the disk's mount point, to name it
    free: int
    needs: tuple[SpaceNeed, ...]

    @property
    def needed(self) -> int:
        return sum(n.nbytes for n in self.needs)

    @property
    def short(self) -> bool:
        return self.free < self.needed

    def shortage_message(self) -> str:
        named = [f"{n.what} ({human_bytes(n.nbytes)})" for n in self.needs if n.nbytes]
        return shortage_message(self.anchor, " and ".join(named), self.needed, self.free, plural=len(named) > 1)


def mount_point(path: Path) -> Path:
    path = existing_parent(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disks_for(needs: list[SpaceNeed]) -> list[Disk]:
    """Group the needs by the disk (device) their folders live on, with each disk's free space."""
    grouped: dict[int, list[tuple[Path, SpaceNeed]]] = {}
    for need in needs:
        anchor = existing_parent(need.folder)
        grouped.setdefault(os.stat(anchor).st_dev, []).append((anchor, need))
    disks = []
    for members in grouped.values():
        folder = members[0][0]
        disks.append(Disk(mount_point(folder), shutil.disk_usage(folder).free, tuple(n for _, n in members)))
    return disks
