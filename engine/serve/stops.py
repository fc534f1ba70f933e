"""Stop sequences on streamed text: the answer ends before the first one, which is never sent.

Text that could be the start of a stop sequence is held back until the next piece shows whether
it is one, so a streamed answer never shows the beginning of a stop sequence it then ends at.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._held = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """(text safe to send now, whether a stop sequence was reached)."""
        if not self.stops:
            return piece, False
        held = self._held + piece
        found = [i for i in (held.find(s) for s in self.stops) if i >= 0]
        if found:
            self._held = ""
            return held[: min(found)], True
        keep = self._partial(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What was held back when the answer ended without a stop sequence."""
        held, self._held = self._held, ""
        return held

    def _partial(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop sequence."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
