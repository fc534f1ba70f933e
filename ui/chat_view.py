"""The conversation as a column of messages; answers are Markdown rendered by Qt and stream in.

Each message is its own auto-sized QTextBrowser so it can carry its own Copy button and stats
line. Streaming re-renders at most every RENDER_INTERVAL_MS: setMarkdown on every token would
cost quadratic time on long answers.
"""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QImage,
    QPalette,
    QPixmap,
    QTextBlockFormat,
    QTextCursor,
    QTextDocument,
    QTextOption,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ui.image_opener import THUMB, ImageOpener, thumbnail_image

RENDER_INTERVAL_MS = 50
_FEATURE = QTextDocument.MarkdownFeature
# Raw HTML in an answer stays literal text: model output must not pull local files into the view.
MARKDOWN = _FEATURE.MarkdownDialectGitHub | _FEATURE.MarkdownNoHTML


class MarkdownView(QTextBrowser):
    """A read-only text block as tall as its content; the surrounding scroll area scrolls."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOpenExternalLinks(True)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self._fit_height(self.document().size())

    def _fit_height(self, size) -> None:
        self.setFixedHeight(math.ceil(size.height()) + 2 * self.frameWidth())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_height(self.document().size())

    def wheelEvent(self, event) -> None:
        event.ignore()  # let the conversation's scroll area scroll

    def sizeHint(self) -> QSize:
        return QSize(200, self.height())


def shade_code_blocks(document: QTextDocument, color: QColor) -> None:
    """Give fenced code blocks a background; Qt's Markdown reader only switches their font."""
    shade = QTextBlockFormat()
    shade.setBackground(color)
    block = document.begin()
    while block.isValid():
        if block.blockFormat().nonBreakableLines():
            cursor = QTextCursor(block)
            cursor.mergeBlockFormat(shade)
        block = block.next()


class MessageWidget(QFrame):
    """One turn side: who, images, the text, and (for answers) stats, Copy and Regenerate."""

    regenerateRequested = Signal()

    def __init__(self, role: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        self._source = ""
        self._render_timer = QTimer(self, singleShot=True, interval=RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render)
        self.setObjectName("userMessage" if role == "user" else "answerMessage")

        self.who = QLabel("You" if role == "user" else "Iris")
        self.who.setObjectName("messageRole")
        self.copy_button = QToolButton(text="Copy", autoRaise=True)
        self.copy_button.setIcon(QIcon.fromTheme("edit-copy"))
        self.copy_button.setToolTip("Copy this message as Markdown")
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.regenerate_button = QToolButton(text="Regenerate", autoRaise=True)
        self.regenerate_button.setIcon(QIcon.fromTheme("view-refresh"))
        self.regenerate_button.setToolTip("Answer the last question again")
        self.regenerate_button.clicked.connect(self.regenerateRequested)
        self.regenerate_button.setVisible(False)
        header = QHBoxLayout()
        header.addWidget(self.who)
        header.addStretch(1)
        header.addWidget(self.regenerate_button)
        header.addWidget(self.copy_button)

        self.images_row = QHBoxLayout()
        self.images_row.setSpacing(6)
        self.thumbnails: list[QLabel] = []
        self.body = MarkdownView()
        self.stats = QLabel()
        self.stats.setObjectName("messageStats")
        self.stats.setWordWrap(True)
        self.stats.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addLayout(self.images_row)
        layout.addWidget(self.body)
        layout.addWidget(self.stats)

    def markdown(self) -> str:
        return self._source

    def set_images(self, paths: list[Path]) -> None:
        """A place for each image, named; its thumbnail comes when it is opened (set_thumbnail)."""
        for path in paths:
            thumb = QLabel()
            thumb.setFixedSize(THUMB, THUMB)
            thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
            thumb.setToolTip(Path(path).name)
            self.images_row.addWidget(thumb)
            self.thumbnails.append(thumb)
        self.images_row.addStretch(1)

    def set_thumbnail(self, index: int, image: QImage | QPixmap) -> None:
        self.thumbnails[index].setPixmap(image if isinstance(image, QPixmap) else QPixmap.fromImage(image))

    def set_plain(self, text: str) -> None:
        self._source = text
        self.body.setPlainText(text)

    def set_markdown(self, text: str) -> None:
        self._source = text
        self._render()

    def append(self, piece: str) -> None:
        self._source += piece
        if not self._render_timer.isActive():
            self._render_timer.start()

    def finish(self, stats_text: str = "", note: str = "") -> None:
        self._render_timer.stop()
        self._render()
        footer = " · ".join(part for part in (stats_text, note) if part)
        self.stats.setText(footer)
        self.stats.setVisible(bool(footer))

    def offer_regenerate(self, offered: bool) -> None:
        """Only the last answer can be given again (the model holds no later turn)."""
        self.regenerate_button.setVisible(offered)

    def show_waiting(self, text: str) -> None:
        """While no answer text exists yet, say what the engine is doing."""
        if not self._source:
            self.body.document().setMarkdown(f"*{text}…*", MARKDOWN)

    def copy_to_clipboard(self) -> None:
        QGuiApplication.clipboard().setText(self._source)

    def _render(self) -> None:
        document = self.body.document()
        document.setMarkdown(self._source, MARKDOWN)
        shade_code_blocks(document, self.palette().color(QPalette.ColorRole.AlternateBase))


class ChatView(QScrollArea):
    """The conversation column; follows the newest text unless the user scrolled up to read."""

    regenerateRequested = Signal()

    def __init__(self, opener: ImageOpener | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._column = QWidget()
        self._column.setObjectName("chatColumn")
        self._layout = QVBoxLayout(self._column)
        self._layout.setContentsMargins(12, 12, 12, 12)
        self._layout.setSpacing(10)
        self.placeholder = QLabel()
        self.set_has_images(False)
        self.placeholder.setObjectName("chatPlaceholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self._layout.addWidget(self.placeholder, 1)
        self._layout.addStretch(0)
        self.setWidget(self._column)
        self._messages: list[MessageWidget] = []
        self._follow = True
        # A reopened chat's thumbnails are made on the opener's thread (the window's, shared with the
        # image pane): a big photo would freeze the window.
        self._opener = opener or ImageOpener(self)
        self._opener.opened.connect(self._show_thumbnail)
        self._awaited: dict[int, tuple[MessageWidget, int]] = {}  # ticket -> (message, image index)
        self.verticalScrollBar().rangeChanged.connect(self._keep_following)
        self.verticalScrollBar().valueChanged.connect(self._track_follow)

    def set_has_images(self, has_images: bool) -> None:
        """The empty-chat hint says what to do next."""
        first = (
            "Ask about the image on the left: type below and press Enter."
            if has_images
            else ("Add an image on the left, then ask about it below.")
        )
        self.placeholder.setText(first + "\nEverything runs on this computer; nothing is uploaded.")

    def messages(self) -> list[MessageWidget]:
        return list(self._messages)

    def last_answer(self) -> MessageWidget | None:
        answers = [m for m in self._messages if m.role == "assistant"]
        return answers[-1] if answers else None

    def add_user(self, text: str, images: list[Path], thumbnails: list[QPixmap] | None = None) -> MessageWidget:
        """A question with its images; their `thumbnails` if the caller has them (the image pane
        made them), else they are made from the files (a reopened chat) and come when ready."""
        message = self._add(MessageWidget("user"))
        message.set_images(images)
        if thumbnails is not None:
            for index, thumbnail in enumerate(thumbnails):
                message.set_thumbnail(index, thumbnail)
        else:
            for index, path in enumerate(images):
                self._awaited[self._opener.open(Path(path), thumbnail_image)] = (message, index)
        message.set_plain(text)
        return message

    def add_answer(self) -> MessageWidget:
        for old in self._messages:
            old.offer_regenerate(False)
        message = self._add(MessageWidget("assistant"))
        message.regenerateRequested.connect(self.regenerateRequested)
        return message

    def set_regenerate_enabled(self, enabled: bool) -> None:
        last = self.last_answer()
        if last is not None:
            last.offer_regenerate(enabled)

    def remove_last(self) -> None:
        if self._messages:
            message = self._messages.pop()
            self._layout.removeWidget(message)
            message.deleteLater()
            dropped = [ticket for ticket, aim in self._awaited.items() if aim[0] is message]
            self._opener.drop(dropped)  # not decoded, if not started yet
            for ticket in dropped:
                del self._awaited[ticket]

    def clear(self) -> None:
        for message in self._messages:
            self._layout.removeWidget(message)
            message.deleteLater()
        self._messages.clear()
        self._opener.drop(self._awaited)
        self._awaited.clear()
        self.placeholder.setVisible(True)
        self._follow = True

    def _show_thumbnail(self, ticket: int, result) -> None:
        """A thumbnail was made (a QImage), or the file could not be read (a message): then the
        place stays empty, with the file's name as its tooltip."""
        message, index = self._awaited.pop(ticket, (None, 0))
        if message is not None and isinstance(result, QImage):
            message.set_thumbnail(index, result)

    def _add(self, message: MessageWidget) -> MessageWidget:
        self.placeholder.setVisible(False)
        self._layout.insertWidget(self._layout.count() - 1, message)
        self._messages.append(message)
        self._follow = True
        return message

    def _keep_following(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)

    def _track_follow(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24
