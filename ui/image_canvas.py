"""The image pane's picture: the selected image, fitted, with any grounding boxes drawn over it."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSizeF, Qt
from PySide6.QtGui import QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui.grounding import fitted_image_rect, paint_boxes
from ui.image_rows import AttachedImage


class ImageCanvas(QWidget):
    """The selected image, fitted with its aspect ratio kept, with any grounding boxes on top."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image: AttachedImage | None = None
        self.show_boxes = True
        self._opening = ""
        self.setMinimumSize(200, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: AttachedImage | None, opening: str = "") -> None:
        """Show `image`; without one, `opening` names the file being opened (else the drop hint)."""
        self.image, self._opening = image, opening
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
                f"Opening {self._opening}…"
                if self._opening
                else "Drop images here\nor paste one with Ctrl+V\nor click Open…",
            )
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        target = self.image_rect()
        painter.drawPixmap(target, self.image.pixmap, QRectF(self.image.pixmap.rect()))
        if self.show_boxes and self.image.boxes:
            paint_boxes(painter, self.image.boxes, target)
