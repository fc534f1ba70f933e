"""Human-readable sizes, speeds and durations for the wizard's labels."""
from __future__ import annotations


def human_bytes(nbytes: float) -> str:
    """Decimal units, like file managers and the Hub show them: '8.9 GB', '312.0 MB', '512 B'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def human_speed(bytes_per_second: float) -> str:
    return f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float) -> str:
    """Coarse on purpose: an ETA that flickers between '4 min 12 s' and '4 min 9 s' reads as noise."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
