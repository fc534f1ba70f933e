"""How a predicted wait reads: "about 8 s", "about 2 min", "under a second".

Predictions come from this computer's measured speeds (engine.estimate_image and the progress
of a read); they are estimates, so they are rounded the way a person would say them."""

from __future__ import annotations


def about(seconds: float) -> str:
    """A wait in words a person reads at a glance."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {round(seconds)} s"
    return f"about {round(seconds / 60)} min"


def image_cost(tokens: int, seconds: float | None) -> str:
    """'196 tokens · about 8 s' (the seconds only once this computer's speed is known)."""
    text = f"{tokens} tokens"
    return text if seconds is None else f"{text} · {about(seconds)}"
