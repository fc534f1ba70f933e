"""What the UI has asked of the engine thread, shared between the two threads.

Requests reach the worker through Qt's queue, so the worker cannot see what waits behind the one
it runs. The controller notes each request here *before* queuing it; the worker reads it to know
whether to stop what it is doing: a Stop covers every request up to it, a newer read-ahead makes
an older one pointless unless it only adds images, and any request at all ends the background
speed measurement, which only runs while nothing waits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

QUESTION, PREPARE, OTHER = "question", "prepare", "other"


@dataclass
class Running:
    """The request the worker is running: its conversation (which cancel() reaches), its id, and
    for a read-ahead the images it reads."""

    conversation: object
    request_id: int
    images: tuple | None = None  # None: a question


@dataclass
class RequestLedger:
    """Thread-safe bookkeeping of requests; ids come from the controller and only grow."""

    wanted: threading.Event = field(default_factory=threading.Event)  # set while any request waits or runs
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _outstanding: int = 0
    _cancelled_through: int = 0
    _last_question: int = 0
    _latest_prepare: tuple[int, tuple] = (0, ())
    _running: Running | None = None

    # -- UI thread ------------------------------------------------------------------------------
    def made(self, kind: str, request_id: int = 0, images: Sequence = ()) -> None:
        """A request is about to be queued: stop the background measurement, and a read-ahead
        that the new list of images no longer starts with."""
        with self._lock:
            self._outstanding += 1
            self.wanted.set()
            if kind == QUESTION:
                self._last_question = max(self._last_question, request_id)
            elif kind == PREPARE:
                self._latest_prepare = (request_id, tuple(images))
            running = self._running if self._running and self._superseded(self._running) else None
        if running is not None:
            running.conversation.cancel()

    def cancel(self, through: int) -> None:
        """Stop request `through` and every earlier one, running or still queued."""
        with self._lock:
            self._cancelled_through = max(self._cancelled_through, through)
            running = self._running
        if running is not None and running.request_id <= through:
            running.conversation.cancel()

    def cancel_all(self) -> None:
        """Shutting down: every request, also one starting right now."""
        self.cancel(sys.maxsize)

    # -- engine thread --------------------------------------------------------------------------
    def start(self, running: Running) -> bool:
        """Mark `running` as the one in progress; False if it was stopped while it waited."""
        with self._lock:
            if running.request_id <= self._cancelled_through:
                return False
            self._running = running
            return True

    def switch(self, conversation) -> None:
        """The running request goes on in another conversation (a fresh one after a failed re-read)."""
        with self._lock:
            if self._running is not None:
                self._running.conversation = conversation

    def end(self) -> None:
        with self._lock:
            self._running = None

    def cancelled(self, request_id: int) -> bool:
        with self._lock:
            return request_id <= self._cancelled_through

    def should_stop(self, running: Running) -> bool:
        """Stopped by the user, or a read-ahead whose images are no longer the next question's."""
        with self._lock:
            return running.request_id <= self._cancelled_through or self._superseded(running)

    def skip_prepare(self, request_id: int) -> bool:
        """A queued read-ahead need not start: it was stopped, or a newer one (with no question
        between them) reads the next question's images anyway."""
        with self._lock:
            newer = self._latest_prepare[0] > request_id and self._last_question < request_id
            return request_id <= self._cancelled_through or newer

    def finished(self) -> bool:
        """One request is done; True if none waits any more (the engine is idle)."""
        with self._lock:
            self._outstanding = max(self._outstanding - 1, 0)
            idle = self._outstanding == 0
            if idle:
                self.wanted.clear()
            return idle

    def _superseded(self, running: Running) -> bool:
        latest, images = self._latest_prepare
        if running.images is None or latest <= running.request_id or self._last_question > running.request_id:
            return False
        return images[: len(running.images)] != running.images
