"""Human-readable sizes, speeds and durations for the wizard's labels."""

from __future__ import annotations

from exporter.units import human_bytes  # the exporter's messages and the wizard's labels agree

__all__ = ["human_bytes", "human_duration", "human_speed"]


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
