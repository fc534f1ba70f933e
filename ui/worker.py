"""The one thread that owns the Engine (its UI-thread facade is ui/controller.py).

The engine is not thread-safe, so a single `EngineWorker` lives on a QThread and is the only
object that ever touches it; the UI sends it requests through queued signals and gets status,
text pieces and stats back the same way, so the UI never blocks. The one exception is
`cancel()`, which the engine allows from any thread: Stop calls it directly so compute stops
within one decode step instead of waiting behind the running answer in the queue.

Images are read ahead of their question (`prepare`): while the person types, the worker reads
the pending images into the conversation, and the question then reads only its own text. When
nothing waits, the worker measures this computer's speed once per model (engine.calibrate), so
that waits can be predicted; any request stops that measurement between its steps.

The worker also runs the optional local server (engine/serve) on the engine it owns; the server
answers on threads of its own and takes turns with the chat through the engine's turn_taking.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from engine.errors import ContextFullError, EngineError
from engine.events import ReadAhead, StatusEvent, TextEvent, TurnStats
from engine.manifest import Manifest
from ui import paths
from ui.requests import RequestLedger, Running

log = logging.getLogger(__name__)


class WorkerStage(Enum):
    """What the engine thread does besides the engine's own stages (engine.events.Stage)."""

    LOADING = "loading the model"
    RESTORING = "re-reading the conversation"


LOADING, RESTORING = WorkerStage.LOADING, WorkerStage.RESTORING

# A reopened chat as the engine re-reads it: (question, image paths, answer) per turn.
History = list[tuple[str, list[Path], str]]


@dataclass(frozen=True)
class EngineSetup:
    """What the worker needs to build an Engine; kept free of engine types so the UI can make it."""

    model_dir: Path
    threads: int | None = None  # None: onnxruntime decides
    speed_file: Path | None = None  # this computer's measured speeds; None: the data folder's


@dataclass(frozen=True)
class EngineInfo:
    """What the UI learns once a model is loaded."""

    model_dir: Path
    manifest: Manifest  # read-only: the engine's own
    # engine.image_tokens(width, height, image_detail=None). One of the two engine calls the UI
    # thread makes: it is pure arithmetic on the engine's immutable preprocessor config.
    image_tokens: Callable[..., int]
    # engine.estimate_image(width, height, image_detail=None, context=0) -> ReadEstimate(tokens,
    # seconds or None): the same arithmetic on this computer's measured speeds (thread-safe).
    estimate_image: Callable
    warnings: tuple[str, ...] = ()  # what the user should know about this model on this machine


def _request(slot):
    """A slot that answers one request of the controller: once it is done and nothing else
    waits, the worker goes on measuring this computer's speed if it has not finished that yet."""

    @functools.wraps(slot)
    def run(self, *args):
        try:
            slot(self, *args)
        finally:
            if self._ledger.finished():
                self._calibrate_while_idle()

    return run


class EngineWorker(QObject):
    """Lives on the engine thread; its slots run there, one at a time."""

    loaded = Signal(object)  # EngineInfo
    loadFailed = Signal(str)
    status = Signal(object)  # a WorkerStage or an engine Stage
    textPiece = Signal(str)
    turnFinished = Signal(object)  # TurnStats
    turnFailed = Signal(str)
    turnSkipped = Signal()  # Stop came before the question was asked; nothing was asked
    restored = Signal(object)  # TurnStats: a reopened chat was re-read before the question
    restoreFailed = Signal(str, bool)  # it could not be (message, too long for the context);
    # the question then goes to a fresh conversation
    servingChanged = Signal(str, str)  # (URL, error): URL "" while not serving, error "" if none
    reading = Signal(int, object, object)  # (request id, stage, Progress or None) of a question or read-ahead
    readAheadEnded = Signal(int, object)  # (request id, ReadAhead, or None if it did not run)
    readAheadFailed = Signal(int, str)  # (request id, message): the question will read them at send
    measuring = Signal(bool)  # the background speed measurement started / ended

    def __init__(self, engine_factory: Callable | None = None):
        super().__init__()
        self._engine_factory = engine_factory or default_engine_factory
        self._engine = None
        self._conversation = None
        self._ledger = RequestLedger()
        self._closing = threading.Event()
        self._history_read = None  # the conversation a reopened chat was re-read into (or replaced by)
        self._calibrated = True  # nothing to measure until a model is loaded
        self._serve_wanted = (False, 0)  # (on, port) as the settings say
        self._server = None  # a running engine.serve LocalServer

    @property
    def ledger(self) -> RequestLedger:
        """The controller notes every request here before queuing it (any thread)."""
        return self._ledger

    @property
    def engine(self):
        """The loaded engine: None before a load and after release(). Read it on the engine
        thread, or once that thread has ended."""
        return self._engine

    # -- slots (engine thread) ------------------------------------------------------------

    @Slot(object)
    @_request
    def load(self, setup: EngineSetup) -> None:
        if self._closing.is_set():
            return
        self.status.emit(LOADING)
        self._stop_server()  # it serves the engine being replaced
        self._engine = self._conversation = self._history_read = None
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
        self._calibrated = not hasattr(engine, "calibrate")
        self.loaded.emit(
            EngineInfo(
                setup.model_dir,
                engine.manifest,
                engine.image_tokens,
                engine.estimate_image,
                tuple(getattr(engine, "warnings", ())),
            )
        )
        self._apply_serving()

    @Slot(int, str, object, object, str, object)
    @_request
    def ask(self, turn_id: int, text: str, images, sampling, detail: str, history) -> None:
        """`history`, when given, is a reopened chat to re-read into the (empty) conversation first."""
        self._run_turn(
            turn_id,
            lambda conv: conv.ask(text, images=list(images), sampling=sampling, detail=detail),
            history,
            detail,
        )

    @Slot(int, object)
    @_request
    def regenerate(self, turn_id: int, sampling) -> None:
        self._run_turn(turn_id, lambda conv: conv.regenerate(sampling=sampling))

    @Slot(int, object, str, object)
    @_request
    def prepare(self, request_id: int, images, detail: str, history) -> None:
        """Read `images` (the next question's, all of them) ahead of its text; a reopened chat
        (`history`) is re-read first. Ends with readAheadEnded or readAheadFailed."""
        conversation = self._conversation
        if self._closing.is_set() or conversation is None or self._ledger.skip_prepare(request_id):
            self.readAheadEnded.emit(request_id, None)
            return
        running = Running(conversation, request_id, tuple(images))
        if not self._ledger.start(running):
            self.readAheadEnded.emit(request_id, None)
            return
        result = None
        try:
            if history and self._history_read is not conversation:
                conversation = self._restore(
                    conversation,
                    history,
                    detail,
                    running,
                    lambda event: self.reading.emit(request_id, RESTORING, event.progress),
                )
                if conversation is None:
                    self.readAheadEnded.emit(request_id, None)
                    return
            for event in conversation.prepare(list(images), detail=detail):
                if self._ledger.should_stop(running):
                    conversation.cancel()  # again at every event, as for a question
                if isinstance(event, StatusEvent):
                    self.reading.emit(request_id, event.stage, event.progress)
                elif isinstance(event, ReadAhead):
                    result = event
            self.readAheadEnded.emit(request_id, result)
        except EngineError as error:
            self.readAheadFailed.emit(request_id, str(error))
        except Exception as error:
            log.error("reading ahead failed:\n%s", traceback.format_exc())
            self.readAheadFailed.emit(request_id, f"Something went wrong while reading the image: {error!r}")
        finally:
            self._ledger.end()

    @Slot()
    @_request
    def new_conversation(self) -> None:
        if self._engine is not None and not self._closing.is_set():
            self._conversation = self._engine.new_conversation()

    @Slot(bool, int)
    @_request
    def set_serving(self, enabled: bool, port: int) -> None:
        """Serve the model to other programs on 127.0.0.1:port (from now, or once it is loaded)."""
        self._serve_wanted = (bool(enabled), int(port))
        self._apply_serving()

    # -- any thread -----------------------------------------------------------------------

    def cancel(self, through_turn: int) -> None:
        """Stop request `through_turn` and every earlier one, running or still queued."""
        self._ledger.cancel(through_turn)

    def begin_shutdown(self) -> None:
        """Refuse new work and stop the current answer; the owner then quits the thread."""
        self._closing.set()
        self._ledger.cancel_all()
        server = self._server
        if server is not None:
            server.service.cancel_all()  # release() stops it once the thread is done

    def release(self) -> None:
        """Drop the engine; only call once the thread has finished."""
        self._stop_server()
        self._engine = self._conversation = self._history_read = None

    # -- internals ------------------------------------------------------------------------

    def _run_turn(
        self, turn_id: int, start: Callable, history: History | None = None, detail: str | None = None
    ) -> None:
        if self._closing.is_set():
            return
        conversation = self._conversation
        if conversation is None:
            self.turnFailed.emit("No model is loaded yet.")
            return
        running = Running(conversation, turn_id)
        if not self._ledger.start(running):
            self.turnSkipped.emit()
            return
        try:
            if history and self._history_read is not conversation:  # not re-read ahead already
                conversation = self._restore(
                    conversation, history, detail, running, lambda _event: self.status.emit(RESTORING)
                )
                if conversation is None or self._ledger.cancelled(turn_id):
                    self.turnSkipped.emit()  # stopped while re-reading: the question was not asked
                    return
            for event in start(conversation):
                if self._ledger.cancelled(turn_id):
                    # Again at every event: ask() clears the engine's flag when it starts, so a
                    # Stop that landed just before that would otherwise be lost.
                    conversation.cancel()
                self._forward(turn_id, event)
        except EngineError as error:
            self.turnFailed.emit(str(error))
        except Exception as error:
            log.error("answering failed:\n%s", traceback.format_exc())
            self.turnFailed.emit(f"Something went wrong while answering: {error!r}")
        finally:
            self._ledger.end()

    def _restore(
        self,
        conversation,
        history: History,
        detail: str | None,
        running: Running,
        on_status: Callable[[StatusEvent], None],
    ):
        """Re-read a reopened chat; returns the conversation to go on in, or None if Stop came first."""
        try:
            for event in conversation.restore(history, detail=detail):
                if self._ledger.should_stop(running):
                    conversation.cancel()
                if isinstance(event, StatusEvent):
                    on_status(event)
                elif isinstance(event, TurnStats):
                    if event.stop_reason != "restored":
                        return None  # cancelled: the conversation was left empty
                    self._history_read = conversation
                    self.restored.emit(event)
            return conversation
        except EngineError as error:  # too long for the context, or a saved image that no longer reads
            self.restoreFailed.emit(str(error), isinstance(error, ContextFullError))
            fresh = self._conversation = self._history_read = self._engine.new_conversation()
            self._ledger.switch(fresh)
            if self._ledger.should_stop(running):
                fresh.cancel()
            return fresh

    def _calibrate_while_idle(self) -> None:
        """Measure this computer's speed (a few seconds, once per model and CPU) while nothing
        waits; any request stops it between steps, and the next idle moment goes on."""
        engine = self._engine
        if self._calibrated or engine is None or self._closing.is_set() or self._ledger.wanted.is_set():
            return

        def should_stop() -> bool:
            return self._ledger.wanted.is_set() or self._closing.is_set()

        self.measuring.emit(True)
        try:
            self._calibrated = engine.calibrate(should_stop=should_stop)
        except Exception:  # predictions are a convenience: never let them break the app
            log.error("measuring this computer's speed failed:\n%s", traceback.format_exc())
            self._calibrated = True
        finally:
            self.measuring.emit(False)

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
            self.servingChanged.emit(
                "",
                f"The local server could not start on port {port}: "
                f"{error.strerror or error}. Choose another port in Settings.",
            )
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

    def _forward(self, turn_id: int, event) -> None:
        if isinstance(event, TextEvent):
            self.textPiece.emit(event.text)
        elif isinstance(event, StatusEvent):
            self.status.emit(event.stage)
            if event.progress is not None:
                self.reading.emit(turn_id, event.stage, event.progress)
        elif isinstance(event, TurnStats):
            if event.asked:
                self.turnFinished.emit(event)
            else:  # stopped before the question entered the conversation: nothing to show for it
                self.turnSkipped.emit()


def default_engine_factory(setup: EngineSetup):
    from engine.engine import Engine, EngineOptions

    # No image detail here: each question carries its own, so changing it needs no reload.
    speed_file = setup.speed_file or paths.data_dir() / "speeds.json"
    return Engine(setup.model_dir, EngineOptions(threads=setup.threads, speed_file=speed_file))
