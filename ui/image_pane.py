"""The images of a chat: drop, paste or open them, see what each one costs (tokens, and the
seconds this computer takes to read it), see boxes on them.

Images added since the last question are "pending" and go out with the next one; images already
sent stay listed (the model keeps them in context) but cannot be removed from the conversation.
Every image is checked with the engine's own loader before it is accepted, so a file the engine
would refuse is refused here, with the engine's message, and nothing changes. The check and the
decoding run on the opener's thread (ui/image_opener.py): a file is listed at once as "opening…"
and takes its place when it is done, so a big photo never freezes the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ImageError
from engine.image_formats import file_patterns
from ui.grounding_parser import GroundingBox
from ui.image_canvas import ImageCanvas
from ui.image_opener import THUMB, ImageOpener, OpenedImage, open_image, save_and_open
from ui.image_rows import AttachedImage, OpeningImage, describe_row, fill_item

IMAGE_FILTER = f"Images ({file_patterns()});;All files (*)"  # what the engine's loader reads
PASTED = "pasted.png"  # how a pasted bitmap is listed while it is being saved
CELL = QSize(THUMB * 2, THUMB + 40)  # a thumbnail and two lines of text under it


class ImagePane(QWidget):
    imagesChanged = Signal()  # the user changed the images: added, removed, cleared, costed anew
    errorOccurred = Signal(str)
    openingFinished = Signal()  # no file for the next question is being opened any more
    pendingRefused = Signal()  # a file added for the next question was refused (after errorOccurred)

    def __init__(
        self, attachments_dir: Callable[[], Path], opener: ImageOpener | None = None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self._attachments_dir = attachments_dir
        self._rows: list[AttachedImage | OpeningImage] = []  # as listed: in the order added
        self._refusals: dict[int, list[str]] = {}  # batch -> messages, until its last file is done
        self._batches = itertools.count(1)
        self._cost: Callable | None = None
        self._opener = opener or ImageOpener(self)  # the window's, shared with the conversation
        self._opener.opened.connect(self._on_opened)
        self.setAcceptDrops(True)

        self.canvas = ImageCanvas()
        self.thumbnails = QListWidget()
        self.thumbnails.setObjectName("thumbnails")
        self.thumbnails.setViewMode(QListWidget.ViewMode.IconMode)
        self.thumbnails.setFlow(QListWidget.Flow.LeftToRight)
        self.thumbnails.setWrapping(False)
        self.thumbnails.setIconSize(QSize(THUMB, THUMB))
        self.thumbnails.setGridSize(CELL)
        self.thumbnails.setWordWrap(True)
        self.thumbnails.setFixedHeight(CELL.height() + 22)  # room for the scroll bar
        self.thumbnails.setMovement(QListWidget.Movement.Static)
        self.thumbnails.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.thumbnails.currentRowChanged.connect(self._show_row)

        self.open_button = QPushButton(QIcon.fromTheme("document-open"), "Open…")
        self.paste_button = QPushButton(QIcon.fromTheme("edit-paste"), "Paste")
        self.remove_button = QPushButton(QIcon.fromTheme("list-remove"), "Remove")
        self.open_button.clicked.connect(self.open_dialog)
        self.paste_button.clicked.connect(self.paste_from_clipboard)
        self.remove_button.clicked.connect(self.remove_current)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setObjectName("imageInfo")

        buttons = QHBoxLayout()
        for button in (self.open_button, self.paste_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.info)
        layout.addWidget(self.thumbnails)
        layout.addLayout(buttons)
        self._refresh()

    # -- what the window asks ---------------------------------------------------------------

    def images(self) -> list[AttachedImage]:
        """The accepted images, in order (files still being opened are not among them)."""
        return [row for row in self._rows if isinstance(row, AttachedImage)]

    def opening(self, include_sent: bool = False) -> list[Path]:
        """Files added for the next question and not yet accepted or refused (a question sent
        meanwhile waits for them); with include_sent, also a reopened chat's images still opening."""
        return [row.path for row in self._rows if isinstance(row, OpeningImage) and (include_sent or not row.sent)]

    def pending(self) -> list[Path]:
        return [image.path for image in self._pending_images()]

    def pending_thumbnails(self) -> list[QPixmap]:
        """The pending images' thumbnails, in the order of pending(): the conversation shows
        these rather than decoding each image again."""
        return [image.thumbnail for image in self._pending_images()]

    def mark_sent(self) -> None:
        """The pending images went out with a question (a file still being opened waits for the next)."""
        for image in self._pending_images():
            image.sent = True
        self._refresh()

    def mark_pending(self, paths: list[Path]) -> None:
        """Undo mark_sent for these images (their question never reached the model)."""
        for image in self.images():
            if image.path in paths:
                image.sent = False
        self._refresh()

    def mark_read(self, count: int) -> None:
        """The first `count` pending images are read ahead (the engine reads them in order); the
        others are not (yet)."""
        read = {id(image) for image in self._pending_images()[:count]}
        for image in self.images():
            image.read = id(image) in read
        self._refresh()

    def clear(self) -> None:
        """A new chat: no images, and the files still being opened for the old one are dropped."""
        was_opening = bool(self.opening())
        self._opener.drop(row.ticket for row in self._rows if isinstance(row, OpeningImage))
        self._rows.clear()
        self._refusals.clear()
        self._refresh()
        self.imagesChanged.emit()
        if was_opening:
            self.openingFinished.emit()

    def current(self) -> AttachedImage | None:
        row = self._current_row()
        return row if isinstance(row, AttachedImage) else None

    def set_cost_function(self, cost: Callable | None) -> None:
        """cost(width, height) -> an estimate with .tokens and .seconds (None before this computer's
        speed is known); None while no model is loaded. Call it again when the image detail
        changes: pending images get the new cost, sent ones keep what they cost."""
        self._cost = cost
        for image in self.images():
            image.read = False  # read at the old detail, or by the model that was replaced
        self._estimate_all()
        self.imagesChanged.emit()

    def refresh_costs(self) -> None:
        """Predict the pending images' reading time again (the measured speeds were refined);
        the images themselves did not change, so nothing else is told."""
        self._estimate_all()

    def set_boxes(self, path: Path, boxes: list[GroundingBox]) -> None:
        for row, image in enumerate(self._rows):
            if isinstance(image, AttachedImage) and image.path == path:
                image.boxes = list(boxes)
                self.thumbnails.setCurrentRow(row)
        self.canvas.update()

    # -- adding images ----------------------------------------------------------------------

    def add_files(
        self, paths: list[Path], sent: bool = False, open_file: Callable[[Path], object] = open_image
    ) -> None:
        """List the files at once and open them on the opener's thread; each readable one is
        accepted in its place (imagesChanged), the others are dropped and their messages told
        together (errorOccurred) once the last file of this call is done."""
        new: list[Path] = []
        for path in map(Path, paths):
            if path not in new and not self._listed(path, sent):
                new.append(path)
        self._start_opening(new, sent, open_file)

    def _listed(self, path: Path, sent: bool) -> bool:
        return any(row.path == path and row.sent == sent for row in self._rows)

    def _start_opening(self, paths: list[Path], sent: bool, open_file: Callable[[Path], object]) -> None:
        """List `paths` (one batch) and have the opener open each with `open_file`."""
        if not paths:
            return
        batch = next(self._batches)
        for path in paths:
            self._rows.append(OpeningImage(path, sent, self._opener.open(path, open_file), batch))
        self._refusals[batch] = []
        self._refresh()
        if not sent:  # the user's newest file is shown (a reopened chat's never take the selection)
            self.thumbnails.setCurrentRow(len(self._rows) - 1)

    def add_qimage(self, image: QImage) -> None:
        """Save a pasted/dropped bitmap into the data folder so it is a file like any other. It is
        named after its pixels and written as PNG on the opener's thread; listed as "pasted.png"
        until then. The same pixels pasted again are the same file: the second is dropped."""
        if image.isNull():
            self.errorOccurred.emit("The clipboard image is empty.")
            return
        folder = self._attachments_dir()
        # Listed under a stand-in name (two pastes being saved are two rows) until it is saved.
        self._start_opening([folder / PASTED], False, lambda _listed: save_and_open(image, folder))

    def add_mime(self, mime: QMimeData) -> None:
        """Files dropped or pasted as URLs, or a raw bitmap (e.g. dragged from a browser)."""
        local = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
        if local:
            self.add_files(local)
        elif mime.hasImage():
            self.add_qimage(QImage(mime.imageData()))
        else:
            self.errorOccurred.emit("Only image files can be added here.")

    @staticmethod
    def can_accept(mime: QMimeData) -> bool:
        return mime.hasImage() or any(url.isLocalFile() for url in mime.urls())

    def paste_from_clipboard(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not self.can_accept(mime):
            self.errorOccurred.emit("The clipboard holds no image.")
            return
        self.add_mime(mime)

    def open_dialog(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Add images", "", IMAGE_FILTER)
        if names:
            self.add_files([Path(name) for name in names])

    def remove_current(self) -> None:
        """Remove the selected pending image, or stop waiting for the selected file being opened."""
        row = self._current_row()
        if row is None or row.sent:
            return
        self._rows.remove(row)
        self._refresh()
        self.imagesChanged.emit()
        if isinstance(row, OpeningImage):
            self._opener.drop([row.ticket])
            self._row_done(row)

    # -- drag and drop ----------------------------------------------------------------------

    def handle_drag(self, event) -> None:
        """A drag entering, moving or dropping here or anywhere else in the window: accept what
        can be added, add it on drop."""
        if event.type() == QEvent.Type.Drop:  # (drag enter and move events are QDropEvents too)
            self.add_mime(event.mimeData())  # says why, if it cannot take what was dropped
            event.acceptProposedAction()
        elif self.can_accept(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragEnterEvent(self, event) -> None:
        self.handle_drag(event)

    def dragMoveEvent(self, event) -> None:
        self.handle_drag(event)

    def dropEvent(self, event) -> None:
        self.handle_drag(event)

    # -- internals --------------------------------------------------------------------------

    def _on_opened(self, ticket: int, result: OpenedImage | str) -> None:
        """A file was opened: it takes its place in the list, or leaves it with a message. A file
        removed (or a chat cleared) meanwhile is no longer listed, and its result is dropped."""
        index = next((i for i, r in enumerate(self._rows) if isinstance(r, OpeningImage) and r.ticket == ticket), None)
        if index is None:
            return
        row = self._rows[index]
        if not isinstance(result, str) and result.saved_as is not None:  # a pasted bitmap, saved
            row.path = result.saved_as
            if any(other is not row and other.path == row.path and other.sent == row.sent for other in self._rows):
                del self._rows[index]  # pasted before: that one stays
                self.thumbnails.takeItem(index)
                self._show_row(self.thumbnails.currentRow())
                self._row_done(row)
                return
        if isinstance(result, str):
            del self._rows[index]
            self._refusals[row.batch].append(result)
            self.thumbnails.takeItem(index)  # the other items stay, and so does the selection
            self._show_row(self.thumbnails.currentRow())
        else:
            image = AttachedImage(
                row.path,
                result.width,
                result.height,
                QPixmap.fromImage(result.preview),  # pixmaps are made on the GUI thread only
                QPixmap.fromImage(result.thumbnail),
                row.sent,
            )
            self._rows[index] = image
            self._estimate(image)
            fill_item(self.thumbnails.item(index), image)  # in place: no rebuild, the selection stays
            self.thumbnails.doItemsLayout()  # its text grew a line: lay the items out again (no stale text)
            if index == self.thumbnails.currentRow():
                self._show_row(index)
            if not image.sent:  # an image of a reopened chat, shown late, changes nothing the user did
                self.imagesChanged.emit()
        self._row_done(row)

    def _row_done(self, done: OpeningImage) -> None:
        """A file is no longer being opened: tell its batch's refusals once none of the batch's
        files is left, and say when nothing the next question waits for is left."""
        batch = done.batch
        if batch in self._refusals and not any(
            isinstance(row, OpeningImage) and row.batch == batch for row in self._rows
        ):
            refusals = self._refusals.pop(batch)
            if refusals:
                self.errorOccurred.emit("\n".join(refusals))
                if not done.sent:  # a batch is all for the next question or all a reopened chat's
                    self.pendingRefused.emit()
        if not done.sent and not self.opening():
            self.openingFinished.emit()

    def _pending_images(self) -> list[AttachedImage]:
        """The images the next question takes: the unsent ones up to the first file still being
        opened, so that they go out in the order they were added."""
        pending = []
        for row in self._rows:
            if row.sent:
                continue
            if isinstance(row, OpeningImage):
                break
            pending.append(row)
        return pending

    def _current_row(self) -> AttachedImage | OpeningImage | None:
        row = self.thumbnails.currentRow()
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def _estimate_all(self) -> None:
        for image in self.images():
            if not image.sent or image.tokens is None:
                self._estimate(image)
        self._refresh()

    def _estimate(self, image: AttachedImage) -> None:
        image.tokens = image.seconds = None
        if self._cost is None:
            return
        try:
            estimate = self._cost(image.width, image.height)
        except ImageError:
            return
        image.tokens, image.seconds = estimate.tokens, estimate.seconds

    def _refresh(self) -> None:
        row = self.thumbnails.currentRow()
        self.thumbnails.blockSignals(True)
        self.thumbnails.clear()
        for image in self._rows:
            item = QListWidgetItem()
            fill_item(item, image)
            self.thumbnails.addItem(item)
        self.thumbnails.blockSignals(False)
        if self._rows:
            self.thumbnails.setCurrentRow(min(max(row, 0), len(self._rows) - 1))
        self._show_row(self.thumbnails.currentRow())

    def _show_row(self, row: int) -> None:
        entry = self._rows[row] if 0 <= row < len(self._rows) else None
        image = entry if isinstance(entry, AttachedImage) else None
        self.canvas.set_image(image, entry.path.name if isinstance(entry, OpeningImage) else "")
        self.remove_button.setEnabled(entry is not None and not entry.sent)
        self.thumbnails.setVisible(bool(self._rows))
        self.info.setText(describe_row(entry))
        self.info.setVisible(entry is not None)
        self.remove_button.setToolTip(
            "Images already sent stay in the model's context; start a new chat to drop them."
            if entry is not None and entry.sent
            else "Remove this image before sending"
        )
