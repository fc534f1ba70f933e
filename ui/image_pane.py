"""The images of a chat: drop, paste or open them, see what each one costs (tokens, and the
seconds this computer takes to read it), see boxes on them.

Images added since the last question are "pending" and go out with the next one; images already
sent stay listed (the model keeps them in context) but cannot be removed from the conversation.
Every image is checked with the engine's own loader before it is accepted, so a file the engine
would refuse is refused here, with the engine's message, and nothing changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ImageOps
from PIL.Image import Image as PILImage
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, QRectF, QSize, QSizeF, Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QImage, QImageReader, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ImageError
from engine.image import load_image
from engine.image_formats import file_patterns
from ui.grounding import GroundingBox, fitted_image_rect, paint_boxes
from ui.waits import about, image_cost

IMAGE_FILTER = f"Images ({file_patterns()});;All files (*)"  # what the engine's loader reads
THUMB = 64
CELL = QSize(THUMB * 2, THUMB + 40)  # a thumbnail and two lines of text under it


@dataclass
class AttachedImage:
    path: Path
    width: int  # after EXIF orientation, as the engine sees it
    height: int
    pixmap: QPixmap
    sent: bool = False
    tokens: int | None = None
    seconds: float | None = None  # predicted reading time on this computer (None: not measured yet)
    read: bool = False  # pending, and already read by the engine: a question about it starts at once
    boxes: list[GroundingBox] = field(default_factory=list)


PREVIEW_SIDE = 4096  # pixels; the pane never shows more, and Qt refuses images over its allocation limit


def read_pixmap(path: Path, upright: PILImage | None = None) -> QPixmap:
    """The image upright (EXIF applied, as the engine does). Formats Qt lacks (AVIF) and images
    too large for Qt's allocation limit come from Pillow (`upright`, if already loaded), the
    large ones scaled to a preview."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    too_large = size.isValid() and size.width() * size.height() * 4 > QImageReader.allocationLimit() * 2**20
    image = QImage() if too_large else reader.read()
    if image.isNull():
        upright = upright or load_image(path)  # RGB
        if max(upright.size) > PREVIEW_SIDE:
            upright = ImageOps.contain(upright, (PREVIEW_SIDE, PREVIEW_SIDE))
        pixels = upright.tobytes()
        image = QImage(pixels, upright.width, upright.height, 3 * upright.width, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image)


class ImageCanvas(QWidget):
    """The selected image, fitted with its aspect ratio kept, with any grounding boxes on top."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image: AttachedImage | None = None
        self.show_boxes = True
        self.setMinimumSize(200, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: AttachedImage | None) -> None:
        self.image = image
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is drawn in widget coordinates (empty when there is none)."""
        if self.image is None:
            return QRectF()
        area = QRectF(self.rect()).adjusted(8, 8, -8, -8)
        fitted = fitted_image_rect(QSizeF(self.image.pixmap.size()), area)
        return QRectF(fitted.toRect())  # whole pixels: a crisp image and crisp box outlines

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        palette = self.palette()
        if self.image is None:
            pen = QPen(palette.color(QPalette.ColorRole.Mid), 2, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawRoundedRect(QRectF(self.rect()).adjusted(6, 6, -6, -6), 10, 10)
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(
                self.rect().adjusted(20, 20, -20, -20),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                "Drop images here\nor paste one with Ctrl+V\nor click Open…",
            )
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        target = self.image_rect()
        painter.drawPixmap(target, self.image.pixmap, QRectF(self.image.pixmap.rect()))
        if self.show_boxes and self.image.boxes:
            paint_boxes(painter, self.image.boxes, target)


class ImagePane(QWidget):
    imagesChanged = Signal()
    errorOccurred = Signal(str)

    def __init__(self, attachments_dir: Callable[[], Path], parent: QWidget | None = None):
        super().__init__(parent)
        self._attachments_dir = attachments_dir
        self._images: list[AttachedImage] = []
        self._cost: Callable | None = None
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
        return list(self._images)

    def pending(self) -> list[Path]:
        return [image.path for image in self._images if not image.sent]

    def mark_sent(self) -> None:
        for image in self._images:
            image.sent = True
        self._refresh()

    def mark_pending(self, paths: list[Path]) -> None:
        """Undo mark_sent for these images (their question never reached the model)."""
        for image in self._images:
            if image.path in paths:
                image.sent = False
        self._refresh()

    def mark_read(self, count: int) -> None:
        """The first `count` pending images are read ahead (the engine reads them in order); the
        others are not (yet)."""
        for index, image in enumerate(image for image in self._images if not image.sent):
            image.read = index < count
        self._refresh()

    def clear(self) -> None:
        self._images.clear()
        self._refresh()
        self.imagesChanged.emit()

    def current(self) -> AttachedImage | None:
        row = self.thumbnails.currentRow()
        return self._images[row] if 0 <= row < len(self._images) else None

    def set_cost_function(self, cost: Callable | None) -> None:
        """cost(width, height) -> an estimate with .tokens and .seconds (None before this computer's
        speed is known); None while no model is loaded. Call it again when the image detail
        changes: pending images get the new cost, sent ones keep what they cost."""
        self._cost = cost
        for image in self._images:
            image.read = False  # read at the old detail, or by the model that was replaced
        self._estimate_all()
        self.imagesChanged.emit()

    def refresh_costs(self) -> None:
        """Predict the pending images' reading time again (the measured speeds were refined);
        the images themselves did not change, so nothing else is told."""
        self._estimate_all()

    def set_boxes(self, path: Path, boxes: list[GroundingBox]) -> None:
        for row, image in enumerate(self._images):
            if image.path == path:
                image.boxes = list(boxes)
                self.thumbnails.setCurrentRow(row)
        self.canvas.update()

    # -- adding images ----------------------------------------------------------------------

    def add_files(self, paths: list[Path], sent: bool = False) -> list[str]:
        """Add every readable image; returns one message per refused file (and reports them)."""
        errors = []
        added = False
        for path in paths:
            path = Path(path)
            if any(image.path == path and image.sent == sent for image in self._images):
                continue
            try:
                self._images.append(self._make(path, sent))
                added = True
            except ImageError as error:
                errors.append(str(error))
            except OSError as error:
                errors.append(f"Could not read {path.name}: {error.strerror or error}")
        if added:
            self._refresh()
            self.thumbnails.setCurrentRow(len(self._images) - 1)
            self.imagesChanged.emit()
        if errors:
            self.errorOccurred.emit("\n".join(errors))
        return errors

    def add_qimage(self, image: QImage) -> list[str]:
        """Save a pasted/dropped bitmap into the data folder so it is a file like any other."""
        if image.isNull():
            message = "The clipboard image is empty."
            self.errorOccurred.emit(message)
            return [message]
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        raw = bytes(data.data())
        target = self._attachments_dir() / f"pasted-{hashlib.sha256(raw).hexdigest()[:16]}.png"
        if not target.exists():
            target.write_bytes(raw)
        return self.add_files([target])

    def add_mime(self, mime: QMimeData) -> list[str]:
        """Files dropped or pasted as URLs, or a raw bitmap (e.g. dragged from a browser)."""
        local = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
        if local:
            return self.add_files(local)
        if mime.hasImage():
            return self.add_qimage(QImage(mime.imageData()))
        message = "Only image files can be added here."
        self.errorOccurred.emit(message)
        return [message]

    @staticmethod
    def can_accept(mime: QMimeData) -> bool:
        return mime.hasImage() or any(url.isLocalFile() for url in mime.urls())

    def paste_from_clipboard(self) -> bool:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not self.can_accept(mime):
            self.errorOccurred.emit("The clipboard holds no image.")
            return False
        return not self.add_mime(mime)

    def open_dialog(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Add images", "", IMAGE_FILTER)
        if names:
            self.add_files([Path(name) for name in names])

    def remove_current(self) -> None:
        image = self.current()
        if image is None or image.sent:
            return
        self._images.remove(image)
        self._refresh()
        self.imagesChanged.emit()

    # -- drag and drop ----------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if self.can_accept(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        self.add_mime(event.mimeData())
        event.acceptProposedAction()

    # -- internals --------------------------------------------------------------------------

    def _make(self, path: Path, sent: bool) -> AttachedImage:
        upright = load_image(path)  # the engine's loader: same checks, same orientation
        pixmap = read_pixmap(path, upright)
        image = AttachedImage(path, upright.width, upright.height, pixmap, sent)
        self._estimate(image)
        return image

    def _estimate_all(self) -> None:
        for image in self._images:
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
        for image in self._images:
            item = QListWidgetItem(
                QIcon(
                    image.pixmap.scaled(
                        THUMB,
                        THUMB,
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                ),
                thumbnail_text(image),
            )
            item.setToolTip(
                f"{image.path.name}\n{image.width}×{image.height} pixels\n"
                + (f"{image.tokens} image tokens" if image.tokens is not None else "cost: load a model")
                + (
                    f", {about(image.seconds)} to read on this computer"
                    if image.seconds is not None and not image.sent
                    else ""
                )
                + ("\nAlready in the conversation" if image.sent else "\nSent with your next question")
            )
            self.thumbnails.addItem(item)
        self.thumbnails.blockSignals(False)
        if self._images:
            self.thumbnails.setCurrentRow(min(max(row, 0), len(self._images) - 1))
        self._show_row(self.thumbnails.currentRow())

    def _show_row(self, row: int) -> None:
        image = self._images[row] if 0 <= row < len(self._images) else None
        self.canvas.set_image(image)
        self.remove_button.setEnabled(image is not None and not image.sent)
        self.thumbnails.setVisible(bool(self._images))
        if image is None:
            self.info.setText("")
        else:
            cost = "" if image.tokens is None else f" · {image.tokens} image tokens"
            if image.read and not image.sent:
                cost = f" · {image.tokens} image tokens, already read"
            elif image.seconds is not None and not image.sent:
                cost = f" · {image_cost(image.tokens, image.seconds)} to read"
            state = "in the conversation" if image.sent else "will be sent with your next question"
            self.info.setText(f"{image.path.name} · {image.width}×{image.height}{cost} · {state}")
        self.info.setVisible(image is not None)
        self.remove_button.setToolTip(
            "Images already sent stay in the model's context; start a new chat to drop them."
            if image is not None and image.sent
            else "Remove this image before sending"
        )


def thumbnail_text(image: AttachedImage) -> str:
    """Under a thumbnail: its cost, and for a pending image the predicted reading time on a
    second line ('new · 196 tokens', 'about 8 s')."""
    if image.tokens is None:
        return "…" if image.sent else "new · …"
    if image.sent:
        return f"{image.tokens} tokens"
    text = f"new · {image.tokens} tokens"
    if image.read:
        return f"{text}\nready"
    return text if image.seconds is None else f"{text}\n{about(image.seconds)}"
