"""One chat's life: send a question with its images (read ahead while it is typed), stream the
answer, stop, regenerate, save, reopen and export. The widgets show it and the EngineController
does the work; this class keeps the bookkeeping between them (what was sent, what is running,
what to do once it stops)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from engine.events import Stage
from ui.chat_state import IDLE, ChatState, Holding, Idle, Running, Sent
from ui.chat_store import (
    ConversationRecord,
    HistoryError,
    HistoryStore,
    TurnRecord,
    describe_stats,
    export_markdown,
    stats_to_dict,
)
from ui.chat_view import ChatView, MessageWidget
from ui.chats_panel import ChatsPanel
from ui.composer import Composer
from ui.controller import EngineController
from ui.grounding_parser import parse_boxes
from ui.image_pane import ImagePane
from ui.read_ahead import ImageReadAhead
from ui.worker import LOADING, RESTORING, History

STAGE_TEXT = {
    LOADING: "Loading the model",
    RESTORING: "Re-reading the conversation",
    Stage.ENCODING_IMAGE: "Encoding the image",
    Stage.READING_PROMPT: "Reading the prompt",
    Stage.ANSWERING: "Answering",
    Stage.WAITING: "Waiting for the local server's answer",
}


def stage_text(stage) -> str:
    """What the status bar says for a WorkerStage or an engine Stage."""
    return STAGE_TEXT.get(stage, getattr(stage, "value", str(stage)))


REOPENED_NOTICE = (
    "Reopened from your saved chats. The model does not remember these earlier turns yet: "
    "it re-reads them, images included, before it answers your next question."
)
NOT_RESTORED_NOTICE = "Stopped before your question was sent; the model has not re-read this chat yet."
NOT_SENT_NOTICE = "Stopped before your question was sent."


class ChatSession(QObject):
    status = Signal(str, bool)  # text, busy
    error = Signal(str)
    notice = Signal(str)
    noticeCleared = Signal()  # the notice no longer holds (the reopened chat was re-read)
    statsMeasured = Signal(object)  # TurnStats of every finished answer
    progress = Signal(str, object)  # (text, engine Progress) while the question's images and text are read
    answerFinished = Signal(str, str)  # answer text, error ("" when it worked)

    def __init__(
        self,
        controller: EngineController,
        store: HistoryStore,
        chat: ChatView,
        images: ImagePane,
        composer: Composer,
        chats: ChatsPanel,
        sampling: Callable,
        detail: Callable,
        parent: QWidget,
    ):
        super().__init__(parent)
        self.controller, self.store, self.chat = controller, store, chat
        self.images, self.composer, self.chats = images, composer, chats
        self._sampling = sampling  # () -> SamplingOptions from the current settings
        self._detail = detail  # () -> "standard" / "high" from the current settings
        self.model_name = ""  # empty while no model is loaded
        self.record: ConversationRecord = store.new_record()
        self._answer: MessageWidget | None = None  # the answer being written, if any
        self._turn: TurnRecord | None = None
        self._turn_images: list[Path] = []
        self._state: ChatState = IDLE  # what the chat is doing (ui/chat_state.py)
        self._needs_restore = False  # a reopened chat the engine has not re-read yet
        self._turn_id = 0  # the controller's id of the running question
        self.context_used = 0  # tokens the engine's conversation holds (after the last answer)
        self.read_ahead = ImageReadAhead(
            controller, images, detail, lambda: self._history() if self._needs_restore else None, self
        )
        controller.reading.connect(self._on_reading)
        controller.status.connect(self._on_status)
        controller.textPiece.connect(self._on_text)
        controller.turnFinished.connect(self._on_finished)
        controller.turnFailed.connect(self._on_failed)
        controller.turnSkipped.connect(self._on_skipped)
        controller.restored.connect(self._on_restored)
        controller.restoreFailed.connect(self._on_restore_failed)
        images.openingFinished.connect(self._send_held_question)
        images.pendingRefused.connect(self.give_back_held_question)  # not without the image it was about
        composer.sendRequested.connect(self.send)
        composer.stopRequested.connect(self.stop)
        chat.regenerateRequested.connect(self.regenerate)
        chats.openRequested.connect(self.open_saved_chat)
        chats.deleteRequested.connect(self.delete_saved_chat)
        chats.exportRequested.connect(self.export_saved_chat)
        chats.newChatRequested.connect(self.new_chat)
        self.refresh_history()

    @property
    def busy(self) -> bool:
        """The engine is on a question or Regenerate of this chat."""
        return isinstance(self._state, Running)

    @property
    def holding(self) -> bool:
        """A question was sent and waits for its images to be opened."""
        return isinstance(self._state, Holding)

    # -- a turn -------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        if not isinstance(self._state, Idle) or not self.model_name:
            return
        if self.images.opening():  # an image just added belongs to this question: wait for it
            # (a reopened chat's images, still opening, are not part of it: they never hold it)
            self._state = Holding(text)
            self.composer.set_busy(True)
            self.status.emit("Opening the image", True)
            return
        try:
            names = [self.store.add_image(self.record, path) for path in self.images.pending()]
        except OSError as error:
            self.error.emit(f"Could not keep a copy of the image: {error}")
            return
        copies = [self.store.image_path(self.record.id, name) for name in names]
        history = self._history() if self._needs_restore else None
        self._turn_images = self.images.pending()
        thumbnails = self.images.pending_thumbnails()  # already made: the conversation shows the same
        self.images.mark_sent()
        self.chat.add_user(text, copies, thumbnails)
        self._turn = TurnRecord(text, names)
        self.record.turns.append(self._turn)
        self._start_answer(Sent.QUESTION if history is None else Sent.REOPENED_QUESTION)
        self.read_ahead.sent()  # what was read of the images is the question's now
        self._turn_id = self.controller.ask(text, copies, self._sampling(), self._detail(), history)

    def stop(self) -> None:
        """Stop the answer, or the images being read ahead (and anything waiting behind them)."""
        if self.holding:  # not sent yet: back to the box
            self.give_back_held_question()
        elif self.busy:
            self.controller.cancel()
            self.status.emit("Stopping", True)
        elif self.read_ahead.reading:
            self.controller.cancel()

    def _send_held_question(self) -> None:
        """The images of a question sent while they were being opened are in: send it now."""
        if self.holding:
            self.send(self._drop_held_question())

    def give_back_held_question(self) -> None:
        """A question waiting for its images goes back to the box, unsent: one of its files was
        refused, or the window is closing (the box is where unsent text stays)."""
        if self.holding:
            self.composer.restore_question(self._drop_held_question())

    def _drop_held_question(self) -> str:
        text = self._state.question if isinstance(self._state, Holding) else ""
        self._state = IDLE
        self.composer.set_busy(False)
        self.status.emit("Ready" if self.model_name else "No model", False)
        return text

    def regenerate(self) -> None:
        if not isinstance(self._state, Idle) or not self.model_name or self._turn is None:
            return
        self._turn.answer, self._turn.stats, self._turn.error = "", None, ""
        self.chat.remove_last()
        self._start_answer(Sent.REGENERATE)
        self._turn_id = self.controller.regenerate(self._sampling())
        self.read_ahead.read_again()

    def when_idle(self, action: Callable) -> None:
        """Run `action` now, or stop the answer and run it as soon as the engine is free."""
        if not isinstance(self._state, Running):
            action()
            return
        self._state = self._state.stopping_for(action)
        self.stop()

    def draw_boxes_from(self, answer: str) -> None:
        """Boxes in an answer go on the last image of its question (else the newest image)."""
        boxes = parse_boxes(answer)
        images = self._turn_images or [image.path for image in self.images.images()]
        if boxes and images:
            self.images.set_boxes(images[-1], boxes)

    def save_partial(self) -> None:
        """On close: keep the part of an answer that had arrived."""
        if isinstance(self._state, Running) and self._state.begun and self._turn is not None:
            self._turn.error = self._turn.error or "Iris was closed during this answer."
            self._save()

    def _start_answer(self, sent: Sent) -> None:
        self._answer = self.chat.add_answer()
        self._state = Running(sent)
        self.composer.set_busy(True)
        if self.read_ahead.reading:  # its progress goes on showing: the question follows the read
            self._answer.show_waiting("Reading the image")
        else:
            self.status.emit("Waiting for the engine", True)

    def _on_status(self, stage) -> None:  # a WorkerStage or an engine Stage
        if stage == LOADING or not isinstance(self._state, Running):
            return
        # Re-reading a chat or waiting for the engine is not asking yet: a refusal or Stop then
        # gives the question back instead of leaving a turn the model never saw.
        if stage not in (RESTORING, Stage.WAITING):
            self._state = self._state.began()
        self.status.emit(stage_text(stage), True)
        if self._answer is not None:
            self._answer.show_waiting(stage_text(stage))

    def _on_reading(self, request_id: int, stage, progress) -> None:
        if self.busy and request_id == self._turn_id and progress is not None:
            self.progress.emit(stage_text(stage), progress)

    def _on_text(self, piece: str) -> None:
        if self._answer is not None and self._turn is not None:
            self._answer.append(piece)
            self._turn.answer += piece

    def _on_finished(self, stats) -> None:
        data = stats_to_dict(stats)
        self.context_used = stats.context_used
        self.statsMeasured.emit(stats)
        if self._turn is not None:
            self._turn.stats = data
        self._end_turn(describe_stats(data))

    def _on_skipped(self) -> None:
        """Stop came before the engine asked the question: nothing of it is in the conversation."""
        match self._state:
            case Running(sent=Sent.REGENERATE):  # the question stays; only its new answer is gone
                self._end_turn(note="Stopped before the answer began")
            case Running(sent=Sent.QUESTION):  # the model never saw it: back to the box, ready to send again
                self.notice.emit(NOT_SENT_NOTICE)
                self._take_back_question()
            case Running(sent=Sent.REOPENED_QUESTION, then=then):
                if then is None:  # a plain Stop (not New chat or another chat): say why
                    self.notice.emit(NOT_RESTORED_NOTICE if self._needs_restore else NOT_SENT_NOTICE)
                self._take_back_question()  # if not re-read yet, the next send does it

    def _on_restored(self, stats) -> None:
        self._needs_restore = False
        self.context_used = stats.context_used
        self.noticeCleared.emit()

    def _on_restore_failed(self, message: str, too_long: bool) -> None:
        self._needs_restore = False
        reason = (
            "This saved chat is too long for the model to re-read"
            if too_long
            else (f"The model could not re-read this saved chat: {message.rstrip('.')}")
        )
        self.notice.emit(
            f"{reason}. Your question starts a fresh conversation: the model does not remember the earlier turns."
        )

    def _on_failed(self, message: str) -> None:
        for original, name in zip(self._turn_images, self._turn.images if self._turn else []):
            message = message.replace(name, original.name)  # the user knows the file, not our copy
        if self._turn is None:
            self._finish_busy()
            self.error.emit(message)
            return
        begun = isinstance(self._state, Running) and self._state.answer_begun
        # Either way the model does not hold this question now (a failed answer is rolled back in
        # the engine), so the screen must not show it as asked: it goes back to the box.
        self._take_back_question()
        self.error.emit(
            f"The answer failed and the model does not remember the question; it is back in the box: {message}"
            if begun
            else f"The question was not sent: {message}"
        )

    def _take_back_question(self) -> None:
        """The engine refused the question up front (bad image, full context): undo the send so
        the user can fix it, with the text back in the box and the images pending again."""
        turn = self.record.turns.pop()
        self.chat.remove_last()
        self.chat.remove_last()
        self.images.mark_pending(self._turn_images)
        self.composer.restore_question(turn.text)
        self._turn = self.record.turns[-1] if self.record.turns else None
        self._answer, self._turn_images = None, []
        self._finish_busy()

    def _end_turn(self, stats_text: str = "", note: str = "") -> None:
        answer, turn = self._answer, self._turn
        self._answer = None
        if answer is not None and turn is not None:
            answer.finish(stats_text, note)
            self.chat.set_regenerate_enabled(True)
            self.draw_boxes_from(turn.answer)
            self._save()
        self._finish_busy()
        if turn is not None:
            self.answerFinished.emit(turn.answer, turn.error)

    def _finish_busy(self) -> None:
        action = self._state.then if isinstance(self._state, Running) else None
        self._state = IDLE
        self.composer.set_busy(False)
        self.status.emit("Ready" if self.model_name else "No model", False)
        if action is not None:
            action()

    # -- chats ----------------------------------------------------------------------------------

    def new_chat(self) -> None:
        if self.busy:
            self.when_idle(self.new_chat)
            return
        if self.read_ahead.reading:
            self.controller.cancel()  # the images of the chat being left
        self.give_back_held_question()
        self.read_ahead.forget()
        self.chat.clear()
        self.images.clear()
        self.record = self.store.new_record()
        self._turn, self._turn_images = None, []
        self._needs_restore = False
        self.context_used = 0
        self.controller.new_conversation()
        self.chats.clear_selection()
        self.composer.setFocus()

    def _save(self) -> None:
        self.record.model = self.model_name
        try:
            self.store.save(self.record)
        except HistoryError as error:
            self.error.emit(str(error))
        self.refresh_history()

    def refresh_history(self) -> None:
        self.chats.show_chats(self.store.list(), self.record.id)

    def open_saved_chat(self, record_id: str) -> None:
        if record_id == self.record.id:
            return
        if self.busy:
            self.when_idle(lambda: self.open_saved_chat(record_id))
            return
        try:
            self.open_record(self.store.load(record_id))
        except HistoryError as error:
            self.error.emit(str(error))

    def open_record(self, record: ConversationRecord) -> None:
        """Show a saved chat; the model re-reads it only when a new question is sent, so browsing
        old chats costs nothing."""
        self.new_chat()
        self.record = record
        self._needs_restore = bool(record.turns)
        for turn in record.turns:
            paths = [self.store.image_path(record.id, name) for name in turn.images]
            self.images.add_files([p for p in paths if p.exists()], sent=True)
            self.chat.add_user(turn.text, paths)
            answer = self.chat.add_answer()
            answer.set_markdown(turn.answer)
            answer.finish(describe_stats(turn.stats), f"Error: {turn.error}" if turn.error else "")
        if record.turns:
            self.notice.emit(REOPENED_NOTICE)
        self.refresh_history()

    def _history(self) -> History:
        """The saved turns for the engine to re-read; images deleted from the chat folder are left out."""
        history = []
        for turn in self.record.turns:
            paths = [self.store.image_path(self.record.id, name) for name in turn.images]
            history.append((turn.text, [p for p in paths if p.exists()], turn.answer))
        return history

    def delete_saved_chat(self, record_id: str) -> None:
        if record_id == self.record.id:
            self.new_chat()
        self.store.delete(record_id)
        self.refresh_history()

    def export_saved_chat(self, record_id: str) -> None:
        try:
            self.export_chat(self.store.load(record_id))
        except HistoryError as error:
            self.error.emit(str(error))

    def export_chat(self, record: ConversationRecord | None = None) -> None:
        record = record if isinstance(record, ConversationRecord) else self.record
        if not record.turns:
            self.error.emit("There is nothing to export yet.")
            return
        name, _ = QFileDialog.getSaveFileName(self.parent(), "Export chat", f"{record.title}.md", "Markdown (*.md)")
        if name:
            try:
                export_markdown(record, self.store, Path(name))
            except HistoryError as error:
                self.error.emit(str(error))
