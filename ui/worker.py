"""The one thread that owns the Engine, and the UI-thread facade that talks to it.

The engine is not thread-safe, so a single `EngineWorker` lives on a QThread and is the only
object that ever touches it; the UI sends it requests through queued signals and gets status,
text pieces and stats back the same way, so the UI never blocks. The one exception is
`cancel()`, which the engine allows from any thread: Stop calls it directly so compute stops
within one decode step instead of waiting behind the running answer in the queue.

The worker also runs the optional local server (engine/serve) on the engine it owns; the server
answers on threads of its own and takes turns with the chat through the engine's lock.
"""
from __future__ import annotations

import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.errors import ContextFullError, EngineError
from engine.manifest import Manifest
from engine.events import StatusEvent, TextEvent, TurnStats

log = logging.getLogger(__name__)

LOADING = "loading the model"
RESTORING = "re-reading the conversation"

# A reopened chat as the engine re-reads it: (question, image paths, answer) per turn.
History = list[tuple[str, list[Path], str]]


@dataclass(frozen=True)
class EngineSetup:
    """What the worker needs to build an Engine; kept free of engine types so the UI can make it."""

    model_dir: Path
    threads: int | None = None  # None: onnxruntime decides


@dataclass(frozen=True)
class EngineInfo:
    """What the UI learns once a model is loaded."""

    model_dir: Path
    manifest: Manifest  # read-only: the engine's own
    # engine.image_tokens(width, height, image_detail=None). The one engine call the UI thread
    # makes: it is pure arithmetic on the engine's immutable preprocessor config.
    image_tokens: Callable[..., int]
    warnings: tuple[str, ...] = ()  # what the user should know about this model on this machine


class EngineWorker(QObject):
    """Lives on the engine thread; its slots run there, one at a time."""

    loaded = Signal(object)  # EngineInfo
    loadFailed = Signal(str)
    status = Signal(str)  # LOADING or an engine Stage value
    textPiece = Signal(str)
    turnFinished = Signal(object)  # TurnStats
    turnFailed = Signal(str)
    turnSkipped = Signal()  # Stop came before the question was asked; nothing was asked
    restored = Signal(object)  # TurnStats: a reopened chat was re-read before the question
    restoreFailed = Signal(str, bool)  # it could not be (message, too long for the context);
    # the question then goes to a fresh conversation
    servingChanged = Signal(str, str)  # (URL, error): URL "" while not serving, error "" if none

    def __init__(self, engine_factory: Callable | None = None):
        super().__init__()
        self._engine_factory = engine_factory or _default_engine_factory
        self._engine = None
        self._conversation = None
        self._lock = threading.Lock()  # guards _running and _cancelled_through across threads
        self._running = None  # (conversation, turn id) of the ask()/regenerate() in progress
        self._cancelled_through = 0  # every turn id up to this one has been stopped
        self._closing = threading.Event()
        self._serve_wanted = (False, 0)  # (on, port) as the settings say
        self._server = None  # a running engine.serve LocalServer

    # -- slots (engine thread) ------------------------------------------------------------

    @Slot(object)
    def load(self, setup: EngineSetup) -> None:
        if self._closing.is_set():
            return
        self.status.emit(LOADING)
        self._stop_server()  # it serves the engine being replaced
        self._engine = self._conversation = None
        try:
            engine = self._engine_factory(setup)
            self._engine = engine
            self._conversation = engine.new_conversation()
        except EngineError as error:
            self.loadFailed.emit(str(error))
            return
        except Exception as error:  # a bug or a broken install: say so instead of dying silently
            log.error("loading the model failed:\n%s", traceback.format_exc())
            self.loadFailed.emit(f"The model could not be loaded: {error!r}")
            return
        self.loaded.emit(EngineInfo(setup.model_dir, engine.manifest, engine.image_tokens,
                                    tuple(getattr(engine, "warnings", ()))))
        self._apply_serving()

    @Slot(int, str, object, object, str, object)
    def ask(self, turn_id: int, text: str, images, sampling, detail: str, history) -> None:
        """`history`, when given, is a reopened chat to re-read into the (empty) conversation first."""
        self._run_turn(
            turn_id, lambda conv: conv.ask(text, images=list(images), sampling=sampling, detail=detail),
            history, detail,
        )

    @Slot(int, object)
    def regenerate(self, turn_id: int, sampling) -> None:
        self._run_turn(turn_id, lambda conv: conv.regenerate(sampling=sampling))

    @Slot()
    def new_conversation(self) -> None:
        if self._engine is not None and not self._closing.is_set():
            self._conversation = self._engine.new_conversation()

    @Slot(bool, int)
    def set_serving(self, enabled: bool, port: int) -> None:
        """Serve the model to other programs on 127.0.0.1:port (from now, or once it is loaded)."""
        self._serve_wanted = (bool(enabled), int(port))
        self._apply_serving()

    # -- any thread -----------------------------------------------------------------------

    def cancel(self, through_turn: int) -> None:
        """Stop turn `through_turn` and every earlier one, running or still queued."""
        with self._lock:
            self._cancelled_through = max(self._cancelled_through, through_turn)
            running = self._running
        if running is not None and running[1] <= through_turn:
            running[0].cancel()

    def begin_shutdown(self) -> None:
        """Refuse new work and stop the current answer; the owner then quits the thread."""
        with self._lock:
            self._closing.set()
            self._cancelled_through = sys.maxsize  # also a turn that is starting right now
            running = self._running
        if running is not None:
            running[0].cancel()
        server = self._server
        if server is not None:
            server.service.cancel_all()  # release() stops it once the thread is done

    def release(self) -> None:
        """Drop the engine; only call once the thread has finished."""
        self._stop_server()
        self._engine = self._conversation = self._running = None

    # -- internals ------------------------------------------------------------------------

    def _run_turn(self, turn_id: int, start: Callable, history: History | None = None,
                  detail: str | None = None) -> None:
        if self._closing.is_set():
            return
        conversation = self._conversation
        if conversation is None:
            self.turnFailed.emit("No model is loaded yet.")
            return
        with self._lock:
            if turn_id <= self._cancelled_through:
                self.turnSkipped.emit()
                return
            self._running = (conversation, turn_id)
        try:
            if history:
                conversation = self._restore(conversation, history, detail, turn_id)
                if conversation is None or self._is_cancelled(turn_id):
                    self.turnSkipped.emit()  # stopped while re-reading: the question was not asked
                    return
            for event in start(conversation):
                if self._is_cancelled(turn_id):
                    # Again at every event: ask() clears the engine's flag when it starts, so a
                    # Stop that landed just before that would otherwise be lost.
                    conversation.cancel()
                self._forward(event)
        except EngineError as error:
            self.turnFailed.emit(str(error))
        except Exception as error:
            log.error("answering failed:\n%s", traceback.format_exc())
            self.turnFailed.emit(f"Something went wrong while answering: {error!r}")
        finally:
            with self._lock:
                self._running = None

    def _restore(self, conversation, history: History, detail: str | None, turn_id: int):
        """Re-read a reopened chat; returns the conversation to ask in, or None if Stop came first."""
        try:
            for event in conversation.restore(history, detail=detail):
                if self._is_cancelled(turn_id):
                    conversation.cancel()
                if isinstance(event, StatusEvent):
                    self.status.emit(RESTORING)
                elif isinstance(event, TurnStats):
                    if event.stop_reason != "restored":
                        return None  # cancelled: the conversation was left empty
                    self.restored.emit(event)
            return conversation
        except EngineError as error:  # too long for the context, or a saved image that no longer reads
            self.restoreFailed.emit(str(error), isinstance(error, ContextFullError))
            fresh = self._conversation = self._engine.new_conversation()
            with self._lock:
                self._running = (fresh, turn_id)
            if self._is_cancelled(turn_id):
                fresh.cancel()
            return fresh

    def _apply_serving(self) -> None:
        enabled, port = self._serve_wanted
        running = self._server
        if running is not None and enabled and running.port == port and running.service.engine is self._engine:
            return
        self._stop_server()
        if not enabled or self._engine is None or self._closing.is_set():
            self.servingChanged.emit("", "")
            return
        try:
            from engine.serve.server import LocalServer

            server = LocalServer(self._engine, port=port)
            server.start()
        except OSError as error:
            self.servingChanged.emit("", f"The local server could not start on port {port}: "
                                         f"{error.strerror or error}. Choose another port in Settings.")
            return
        except Exception as error:
            log.error("starting the local server failed:\n%s", traceback.format_exc())
            self.servingChanged.emit("", f"The local server could not start: {error}")
            return
        self._server = server
        self.servingChanged.emit(server.url, "")

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def _is_cancelled(self, turn_id: int) -> bool:
        with self._lock:
            return turn_id <= self._cancelled_through

    def _forward(self, event) -> None:
        if isinstance(event, TextEvent):
            self.textPiece.emit(event.text)
        elif isinstance(event, StatusEvent):
            self.status.emit(event.stage.value)
        elif isinstance(event, TurnStats):
            if event.asked:
                self.turnFinished.emit(event)
            else:  # stopped before the question entered the conversation: nothing to show for it
                self.turnSkipped.emit()


def _default_engine_factory(setup: EngineSetup):
    from engine.engine import Engine, EngineOptions

    # No image detail here: each question carries its own, so changing it needs no reload.
    return Engine(setup.model_dir, EngineOptions(threads=setup.threads))


class EngineController(QObject):
    """UI-thread handle on the worker: queued requests out, signals back, clean shutdown."""

    _loadRequested = Signal(object)
    _askRequested = Signal(int, str, object, object, str, object)
    _regenerateRequested = Signal(int, object)
    _newConversationRequested = Signal()
    _servingRequested = Signal(bool, int)

    loaded = Signal(object)
    loadFailed = Signal(str)
    status = Signal(str)
    textPiece = Signal(str)
    turnFinished = Signal(object)
    turnFailed = Signal(str)
    turnSkipped = Signal()
    restored = Signal(object)
    restoreFailed = Signal(str, bool)
    servingChanged = Signal(str, str)

    def __init__(self, engine_factory: Callable | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("iris-engine")
        self._worker = EngineWorker(engine_factory)
        self._worker.moveToThread(self._thread)
        self._loadRequested.connect(self._worker.load)
        self._askRequested.connect(self._worker.ask)
        self._regenerateRequested.connect(self._worker.regenerate)
        self._newConversationRequested.connect(self._worker.new_conversation)
        self._servingRequested.connect(self._worker.set_serving)
        for name in (
            "loaded", "loadFailed", "status", "textPiece", "turnFinished", "turnFailed", "turnSkipped",
            "restored", "restoreFailed", "servingChanged",
        ):
            getattr(self._worker, name).connect(getattr(self, name))
        self._turn_counter = 0
        self._stopped = False
        self._thread.start()

    def load(self, setup: EngineSetup) -> None:
        self._loadRequested.emit(setup)

    def ask(self, text: str, images: list[Path], sampling, detail: str = "standard",
            history: History | None = None) -> None:
        """`detail` ("standard" / "high") is how finely this question's images are read; `history`
        is a reopened chat the engine re-reads first (at the same detail) so it remembers it."""
        self._turn_counter += 1
        self._askRequested.emit(
            self._turn_counter, text, [Path(p) for p in images], sampling, detail, history
        )

    def regenerate(self, sampling) -> None:
        self._turn_counter += 1
        self._regenerateRequested.emit(self._turn_counter, sampling)

    def new_conversation(self) -> None:
        self._newConversationRequested.emit()

    def set_serving(self, enabled: bool, port: int) -> None:
        """Turn the local server on or off; servingChanged tells the outcome."""
        self._servingRequested.emit(enabled, port)

    def cancel(self) -> None:
        """Stop the answer being written and any request still waiting in the queue."""
        self._worker.cancel(self._turn_counter)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def shutdown(self) -> None:
        """Cancel, quit, wait: the thread ends before its QThread object can be destroyed."""
        if self._stopped:
            return
        self._stopped = True
        self._worker.begin_shutdown()
        self._thread.quit()
        self._thread.wait()
        self._worker.release()
