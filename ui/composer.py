"""The question box: Enter sends, Shift+Enter starts a new line, the button turns into Stop.

Pasting an image (or image files) into the box attaches it instead of inserting text, which is
what people expect from chat apps.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QWidget

MAX_LINES = 8


class QuestionEdit(QPlainTextEdit):
    submitted = Signal()
    imagePasted = Signal(QMimeData)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setPlaceholderText("Ask about the image…  (Enter to send, Shift+Enter for a new line)")
        self.setTabChangesFocus(True)
        self.document().contentsChanged.connect(self._fit_height)
        self._fit_height()

    def keyPressEvent(self, event) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return source.hasImage() or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        if source.hasImage() or any(url.isLocalFile() for url in source.urls()):
            self.imagePasted.emit(source)
            return
        super().insertFromMimeData(source)

    def _fit_height(self) -> None:
        line = self.fontMetrics().lineSpacing()
        lines = min(max(int(self.document().size().height()), 1), MAX_LINES)
        margins = self.contentsMargins()
        frame = int(self.document().documentMargin() * 2) + margins.top() + margins.bottom()
        self.setFixedHeight(lines * line + frame + 4)


class Composer(QWidget):
    sendRequested = Signal(str)
    stopRequested = Signal()
    imagePasted = Signal(QMimeData)  # an image (or image files) pasted into the box

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = QuestionEdit()
        self.button = QPushButton()
        self.button.setDefault(False)
        self.button.setAutoDefault(False)
        self.button.setMinimumWidth(88)
        self.button.clicked.connect(self._clicked)
        self.edit.submitted.connect(self._submit)
        self.edit.imagePasted.connect(self.imagePasted)
        self.setFocusProxy(self.edit)  # focusing the composer puts the cursor in the box
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignBottom)
        self._busy = False
        self._can_send = True
        self.set_busy(False)

    def set_busy(self, busy: bool) -> None:
        """While an answer is being written the button stops it; Enter does nothing."""
        self._busy = busy
        self.button.setText("Stop" if busy else "Send")
        self.button.setIcon(QIcon.fromTheme("process-stop" if busy else "mail-send"))
        self.button.setToolTip("Stop the answer (Esc)" if busy else "Send (Enter)")
        self.button.setObjectName("stopButton" if busy else "sendButton")
        self.button.style().unpolish(self.button)
        self.button.style().polish(self.button)
        self._update_enabled()

    def set_can_send(self, can_send: bool) -> None:
        """False while no model is loaded."""
        self._can_send = can_send
        self._update_enabled()

    def text(self) -> str:
        return self.edit.toPlainText()

    def restore_question(self, text: str) -> None:
        """Put a question that was not sent back in the box, to fix and send again."""
        self.edit.setPlainText(text)

    def _update_enabled(self) -> None:
        self.button.setEnabled(self._busy or self._can_send)

    def _clicked(self) -> None:
        if self._busy:
            self.stopRequested.emit()
        else:
            self._submit()

    def _submit(self) -> None:
        if self._busy or not self._can_send:
            return
        text = self.edit.toPlainText().strip()
        if not text:
            return
        self.edit.clear()
        self.sendRequested.emit(text)
