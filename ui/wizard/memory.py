"""How much RAM this computer has, and whether the faster first answer fits in it (Qt-free).

The extra int8 prompt graph of the full-size model takes ~3.7 GB more memory (peak ~7.5 GB instead
of ~3.8 GB at a 4k context); below ~12 GB installed, the system and other programs would be pushed
into swap, which costs more time than the graph saves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .units import human_bytes

# A "12 GB" computer reports a little less (the kernel and firmware keep some), hence not 12e9.
FAST_PREFILL_MIN_RAM = 11_500_000_000
MEMINFO = Path("/proc/meminfo")


def total_ram_bytes() -> int | None:
    """Installed RAM in bytes, or None when this system does not say (then nothing is refused)."""
    if sys.platform.startswith("linux"):
        try:
            for line in MEMINFO.read_text(encoding="ascii").splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
        except (OSError, ValueError, IndexError):
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def fast_prefill_blocker(ram_bytes: int | None) -> str:
    """Why the faster first answer is not offered on this computer, or "" when it is."""
    if ram_bytes is None or ram_bytes >= FAST_PREFILL_MIN_RAM:
        return ""
    return f"Not available: needs at least 12 GB of memory, this computer has {human_bytes(ram_bytes)}."
