"""Byte counts for people: the unit that fits, so a small model is not '0.0 GB'."""

from __future__ import annotations


def human_bytes(nbytes: float) -> str:
    """Decimal units, like file managers and the Hub show them: '8.9 GB', '312.0 MB', '512 B'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"
