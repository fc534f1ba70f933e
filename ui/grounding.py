"""Grounding boxes on screen: where an image fitted into an area lands, and the boxes drawn over it
(the boxes themselves are found in answers by ui/grounding_parser.py)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QPen

from ui.grounding_parser import GroundingBox

# Distinct hues that read on light and dark backgrounds and on most photos.
BOX_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def box_rect(box: GroundingBox, image_rect: QRectF) -> QRectF:
    """The box on screen, given where the whole image is drawn."""
    left, top, right, bottom = box.in_pixels(image_rect.width(), image_rect.height())
    return QRectF(image_rect.x() + left, image_rect.y() + top, right - left, bottom - top)


def fitted_image_rect(image_size: QSizeF, area: QRectF) -> QRectF:
    """Where an image drawn with its aspect ratio kept, centred in `area`, ends up."""
    if image_size.isEmpty() or area.isEmpty():
        return QRectF()
    scale = min(area.width() / image_size.width(), area.height() / image_size.height())
    width, height = image_size.width() * scale, image_size.height() * scale
    return QRectF(area.x() + (area.width() - width) / 2, area.y() + (area.height() - height) / 2, width, height)


def paint_boxes(painter: QPainter, boxes: list[GroundingBox], image_rect: QRectF) -> None:
    """Outline each box over the drawn image and put its label on a filled tag at its corner."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    metrics = QFontMetricsF(painter.font())
    for index, box in enumerate(boxes):
        color = QColor(BOX_COLORS[index % len(BOX_COLORS)])
        rect = QRectF(box_rect(box, image_rect).toRect())  # whole pixels keep the outline sharp
        painter.setPen(QPen(color, 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        if not box.label:
            continue
        text = metrics.elidedText(box.label, Qt.TextElideMode.ElideRight, max(rect.width(), 60))
        tag = QRectF(0, 0, metrics.horizontalAdvance(text) + 8, metrics.height() + 2)
        above = rect.top() - tag.height() >= image_rect.top()
        tag.moveTopLeft(QPointF(rect.left() - 1, rect.top() - tag.height() if above else rect.top()))
        painter.fillRect(tag, color)
        luma = 0.299 * color.red() + 0.587 * color.green() + 0.114 * color.blue()
        painter.setPen(QColor("black" if luma > 150 else "white"))
        painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()
