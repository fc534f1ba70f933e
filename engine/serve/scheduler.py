"""One generation at a time, first come first served, with a bounded queue behind it.

The CPU answers one request at a time anyway; queueing a few more keeps clients that send
requests back to back working, while a flood is told to come back later (429 + Retry-After)
instead of piling up memory and waiting time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class Busy(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"busy; retry after {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    """A place in the line; give it back exactly once (submit() does when the job ends)."""

    def __init__(self, scheduler: Scheduler):
        self._scheduler = scheduler
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler._leave()


class Scheduler:
    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iris-serve-generate")
        self._lock = threading.Lock()
        self._admitted = 0  # the job running plus those waiting
        self._recent = deque([10.0], maxlen=8)  # seconds per job, for Retry-After

    def reserve(self) -> Ticket:
        """A place in the line, or Busy when the line is full."""
        with self._lock:
            if self._admitted >= 1 + self.max_waiting:
                per_job = sum(self._recent) / len(self._recent)
                raise Busy(max(1, math.ceil(per_job * self._admitted)))
            self._admitted += 1
        return Ticket(self)

    def submit(self, ticket: Ticket, job: Callable) -> Future:
        """Run `job()` when its turn comes; the ticket is released when it ends."""

        def run():
            start = time.perf_counter()
            try:
                return job()
            finally:
                self._recent.append(time.perf_counter() - start)
                ticket.release()

        try:
            return self._executor.submit(run)
        except RuntimeError:  # shutting down
            ticket.release()
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1
