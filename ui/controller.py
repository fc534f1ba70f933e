"""The UI thread's handle on the engine thread: requests out as queued signals, results back.

Every request is noted in the worker's ledger (ui/requests.py) before it is queued, so the
worker knows what waits behind the one it runs; questions and read-aheads get ids that Stop
covers. Shutting down cancels, quits and waits, so the thread never outlives its QThread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from ui.requests import OTHER, PREPARE, QUESTION
from ui.worker import EngineSetup, EngineWorker, History


class EngineController(QObject):
    """UI-thread handle on the worker: queued requests out, signals back, clean shutdown."""

    _loadRequested = Signal(object)
    _askRequested = Signal(int, str, object, object, str, object)
    _regenerateRequested = Signal(int, object)
    _prepareRequested = Signal(int, object, str, object)
    _newConversationRequested = Signal()
    _servingRequested = Signal(bool, int)

    loaded = Signal(object)
    loadFailed = Signal(str)
    status = Signal(object)
    textPiece = Signal(str)
    turnFinished = Signal(object)
    turnFailed = Signal(str)
    turnSkipped = Signal()
    restored = Signal(object)
    restoreFailed = Signal(str, bool)
    servingChanged = Signal(str, str)
    reading = Signal(int, object, object)
    readAheadEnded = Signal(int, object)
    readAheadFailed = Signal(int, str)
    measuring = Signal(bool)

    def __init__(self, engine_factory: Callable | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("iris-engine")
        self._worker = EngineWorker(engine_factory)
        self._worker.moveToThread(self._thread)
        self._loadRequested.connect(self._worker.load)
        self._askRequested.connect(self._worker.ask)
        self._regenerateRequested.connect(self._worker.regenerate)
        self._prepareRequested.connect(self._worker.prepare)
        self._newConversationRequested.connect(self._worker.new_conversation)
        self._servingRequested.connect(self._worker.set_serving)
        for name in (
            "loaded",
            "loadFailed",
            "status",
            "textPiece",
            "turnFinished",
            "turnFailed",
            "turnSkipped",
            "restored",
            "restoreFailed",
            "servingChanged",
            "reading",
            "readAheadEnded",
            "readAheadFailed",
            "measuring",
        ):
            getattr(self._worker, name).connect(getattr(self, name))
        self._turn_counter = 0
        self._stopped = False
        self._thread.start()

    @property
    def worker(self) -> EngineWorker:
        """The object on the engine thread (its QObject.thread() is that thread). A slot connected
        to its signals with a direct connection runs there, at the moment the signal is emitted."""
        return self._worker

    def load(self, setup: EngineSetup) -> None:
        self._worker.ledger.made(OTHER)
        self._loadRequested.emit(setup)

    def ask(
        self, text: str, images: list[Path], sampling, detail: str = "standard", history: History | None = None
    ) -> int:
        """`detail` ("standard" / "high") is how finely this question's images are read; `history`
        is a reopened chat the engine re-reads first (at the same detail) so it remembers it.
        Images read ahead that match are used as they are. Returns the request's id."""
        self._turn_counter += 1
        self._worker.ledger.made(QUESTION, self._turn_counter)
        self._askRequested.emit(self._turn_counter, text, [Path(p) for p in images], sampling, detail, history)
        return self._turn_counter

    def regenerate(self, sampling) -> int:
        self._turn_counter += 1
        self._worker.ledger.made(QUESTION, self._turn_counter)
        self._regenerateRequested.emit(self._turn_counter, sampling)
        return self._turn_counter

    def prepare(self, images: list[Path], detail: str = "standard", history: History | None = None) -> int:
        """Read `images`, the next question's (all of them), while the question is being written.
        A read that the new list does not start with is stopped; a question sent meanwhile
        waits for the read and uses it. Returns the request's id."""
        self._turn_counter += 1
        images = [Path(p) for p in images]
        self._worker.ledger.made(PREPARE, self._turn_counter, images)
        self._prepareRequested.emit(self._turn_counter, images, detail, history)
        return self._turn_counter

    def new_conversation(self) -> None:
        self._worker.ledger.made(OTHER)
        self._newConversationRequested.emit()

    def set_serving(self, enabled: bool, port: int) -> None:
        """Turn the local server on or off; servingChanged tells the outcome."""
        self._worker.ledger.made(OTHER)
        self._servingRequested.emit(enabled, port)

    def cancel(self) -> None:
        """Stop the answer or read-ahead running and any request still waiting in the queue."""
        self._worker.cancel(self._turn_counter)

    def shutdown(self) -> None:
        """Cancel, quit, wait: the thread ends before its QThread object can be destroyed."""
        if self._stopped:
            return
        self._stopped = True
        self._worker.begin_shutdown()
        self._thread.quit()
        self._thread.wait()
        self._worker.release()
