"""Reading the pending images while the question is being typed.

A person drops an image and then types for a few seconds: the engine reads the image in that
time, so the answer starts sooner. Whenever the pending images (or the detail they are read at)
change, the engine is asked to make them the next question's (the full list: images already
read stay, a removed one is rolled back). Sending never waits for this nor stops it: the
question is queued behind the read and uses it. A read-ahead that fails says why, once (in the
window's one error line); the image stays pending and the question reads it at send time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.events import Stage
from ui.controller import EngineController
from ui.image_pane import ImagePane
from ui.worker import RESTORING, History

READING_TEXT = {
    RESTORING: "Re-reading the conversation",
    Stage.WAITING: "Waiting for the local server's answer",
}


class ImageReadAhead(QObject):
    progress = Signal(str, object)  # (text, engine Progress or None) while a read-ahead runs
    ended = Signal(object)  # the read-ahead is over: ReadAhead, or None (stopped, failed, skipped)
    error = Signal(str)  # why the current read-ahead failed

    def __init__(
        self,
        controller: EngineController,
        images: ImagePane,
        detail: Callable[[], str],
        history: Callable[[], History | None],
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.controller, self.images = controller, images
        self._detail, self._history = detail, history
        self._ready = False  # a model is loaded
        self._requested: tuple[tuple[Path, ...], str | None] = ((), None)  # what the engine was asked to hold
        self._current: int | None = None  # the read-ahead whose events are shown
        controller.reading.connect(self._on_reading)
        controller.readAheadEnded.connect(self._on_ended)
        controller.readAheadFailed.connect(self._on_failed)
        images.imagesChanged.connect(self.update)

    @property
    def reading(self) -> bool:
        """A read-ahead was asked for and has not ended yet."""
        return self._current is not None

    def set_ready(self, ready: bool) -> None:
        """A model was loaded (its conversation holds nothing yet) or is going away."""
        self._ready = ready
        self.forget()
        self.update()

    def update(self) -> None:
        """Ask the engine to hold the pending images, if they differ from what it was asked for."""
        if not self._ready:
            return
        wanted = (tuple(self.images.pending()), self._detail())
        if wanted == self._requested:
            return
        if not wanted[0] and not self._requested[0]:  # nothing read, nothing to read
            self._requested = wanted
            return
        self._requested = wanted
        self._current = self.controller.prepare(list(wanted[0]), wanted[1], self._history())

    def sent(self) -> None:
        """The question went out with the pending images: it takes what was read of them."""
        self._requested = ((), self._detail())

    def read_again(self) -> None:
        """The engine dropped what was read ahead (an answer is being given again): read the
        pending images again once it is done (the request waits behind it)."""
        self._requested = ((), None)
        self.images.mark_read(0)
        self.update()

    def forget(self) -> None:
        """A new conversation: nothing is read ahead in it, and older reads are not shown."""
        self._requested, self._current = ((), None), None
        self.images.mark_read(0)

    def _on_reading(self, request_id: int, stage, progress) -> None:
        if request_id == self._current:
            count = len(self._requested[0])
            text = READING_TEXT.get(stage, "Reading the images" if count > 1 else "Reading the image")
            self.progress.emit(text, progress)

    def _on_ended(self, request_id: int, result) -> None:
        if request_id == self._current:
            self._current = None
            self.ended.emit(result)

    def _on_failed(self, request_id: int, message: str) -> None:
        if request_id != self._current:
            return  # an older read the user has moved on from
        self._current = None
        self.error.emit(message)
        self.ended.emit(None)
