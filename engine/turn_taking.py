"""Whose turn it is on the engine: one generation at a time across threads.

The app's chat, the local server and the first-start measurement each drive the one decoder
(binding their own KV cache to it), and the CPU is the bottleneck anyway, so they take turns
rather than interleave. Background work asks `others_waiting` to make way for a question.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class TurnTaking:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock, self._waiting = threading.Lock(), 0

    def try_take(self) -> bool:
        """Take the turn if nobody has it; False (not taken) at once otherwise."""
        return self._lock.acquire(blocking=False)

    def hold(self, should_stop: Callable[[], bool], poll: float = 0.05) -> bool:
        """Take the turn, waiting while another caller has it; False (not taken) if
        `should_stop()` said so first."""
        with self._count_lock:
            self._waiting += 1
        try:
            while not self._lock.acquire(timeout=poll):
                if should_stop():
                    return False
            return True
        finally:
            with self._count_lock:
                self._waiting -= 1

    def release(self) -> None:
        """End the turn taken with try_take() or hold()."""
        self._lock.release()

    @property
    def busy(self) -> bool:
        """Someone has the turn now."""
        return self._lock.locked()

    @property
    def others_waiting(self) -> bool:
        """Someone waits in hold() (background work should make way)."""
        return self._waiting > 0
