"""One long job on its own QThread, with progress, a cancel flag, and a clean stop.

The job is a plain function `job(report, cancel)`: it calls `report(value)` for progress and checks
the threading.Event `cancel` (the exporter and the download code take exactly these two). Results
and exceptions come back as signals, which Qt delivers on the thread of the receiving page.

A running Task keeps itself alive (Qt aborts the process if a QThread object is destroyed while
its thread runs), and is cancelled when the object that owns it is destroyed without stopping it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

Report = Callable[[Any], None]
Job = Callable[[Report, threading.Event], Any]

_running: set[Task] = set()


class Cancelled(Exception):
    """Raised by a job that saw `cancel` set between two steps of its own."""


class Task(QThread):
    """Signals carry the task first, so a page can ignore a stale task without QObject.sender()."""

    progressed = Signal(object, object)  # (task, value)
    succeeded = Signal(object, object)  # (task, result)
    failed = Signal(object, object)  # (task, exception); ExportCancelled or Cancelled when cancelled

    def __init__(self, job: Job, owner: QObject) -> None:
        super().__init__()  # no Qt parent: the owner's destruction must not destroy a running thread
        self._job = job
        self.cancel_event = threading.Event()
        owner.destroyed.connect(self.cancel)

    def start(self) -> None:
        _running.difference_update([t for t in _running if t.isFinished()])  # safe here: not inside their slots
        _running.add(self)
        super().start()

    def run(self) -> None:
        try:
            result = self._job(lambda value: self.progressed.emit(self, value), self.cancel_event)
        except BaseException as error:  # noqa: BLE001 - every failure must reach the page, never kill the thread
            self.failed.emit(self, error)
        else:
            self.succeeded.emit(self, result)

    @Slot()
    def cancel(self) -> None:
        self.cancel_event.set()

    def stop(self) -> None:
        """Cancel and wait until the thread has ended (the jobs check `cancel` at least once a second)."""
        self.cancel()
        self.wait()
