"""Qwen-style grounding boxes: find them in an answer and place them over the image.

Qwen3-VL writes boxes as JSON objects with "bbox_2d": [x1, y1, x2, y2] in coordinates relative
to the image, scaled to 0..1000 on both axes (so a non-square image has non-square units), and a
"label". Answers wrap them in ```json fences, lists, single objects, sometimes with trailing
commas or a list cut short by the token limit; the parser scans for every JSON value it can
decode so all of those work.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QPen

SCALE = 1000.0
# Distinct hues that read on light and dark backgrounds and on most photos.
BOX_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class GroundingBox:
    """One box in Qwen's 0..1000 relative coordinates, x1 < x2 and y1 < y2."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def in_pixels(self, width: float, height: float) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) on an image of this size in pixels."""
        return (
            self.x1 / SCALE * width,
            self.y1 / SCALE * height,
            self.x2 / SCALE * width,
            self.y2 / SCALE * height,
        )

    def rect_in(self, image_rect: QRectF) -> QRectF:
        """The box on screen, given where the whole image is drawn."""
        left, top, right, bottom = self.in_pixels(image_rect.width(), image_rect.height())
        return QRectF(image_rect.x() + left, image_rect.y() + top, right - left, bottom - top)


def fitted_image_rect(image_size: QSizeF, area: QRectF) -> QRectF:
    """Where an image drawn with its aspect ratio kept, centred in `area`, ends up."""
    if image_size.isEmpty() or area.isEmpty():
        return QRectF()
    scale = min(area.width() / image_size.width(), area.height() / image_size.height())
    width, height = image_size.width() * scale, image_size.height() * scale
    return QRectF(area.x() + (area.width() - width) / 2, area.y() + (area.height() - height) / 2, width, height)


def parse_boxes(text: str) -> list[GroundingBox]:
    """Every well-formed box in `text`, in order of appearance, duplicates removed."""
    cleaned = _TRAILING_COMMA.sub(r"\1", text)
    boxes: list[GroundingBox] = []
    position = 0
    while position < len(cleaned):
        start = _next_bracket(cleaned, position)
        if start < 0:
            break
        value, end = _decode_at(cleaned, start)
        found = list(_boxes_in(value)) if end > start else []
        if found:
            boxes.extend(b for b in found if b not in boxes)
            position = end
        else:
            position = start + 1
    return boxes


def _next_bracket(text: str, position: int) -> int:
    candidates = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
    return min(candidates) if candidates else -1


def _decode_at(text: str, start: int):
    """(value, end) of the JSON (or Python-literal) value starting at `start`; end == start if none."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        pass
    closing = "}" if text[start] == "{" else "]"
    end = text.find(closing, start)
    while end >= 0:  # single-quoted dicts: try the shortest literal that parses
        try:
            return ast.literal_eval(text[start : end + 1]), end + 1
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            end = text.find(closing, end + 1)
    return None, start


def _boxes_in(value):
    if isinstance(value, dict):
        box = _box_from(value)
        if box is not None:
            yield box
            return
        for item in value.values():
            yield from _boxes_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _boxes_in(item)


def _box_from(obj: dict) -> GroundingBox | None:
    coords = obj.get("bbox_2d")
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        return None
    try:
        x1, y1, x2, y2 = (min(max(float(c), 0.0), SCALE) for c in coords)
    except (TypeError, ValueError):
        return None
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    label = obj.get("label", "")
    return GroundingBox(str(label) if label is not None else "", x1, y1, x2, y2)


def paint_boxes(painter: QPainter, boxes: list[GroundingBox], image_rect: QRectF) -> None:
    """Outline each box over the drawn image and put its label on a filled tag at its corner."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    metrics = QFontMetricsF(painter.font())
    for index, box in enumerate(boxes):
        color = QColor(BOX_COLORS[index % len(BOX_COLORS)])
        rect = QRectF(box.rect_in(image_rect).toRect())  # whole pixels keep the outline sharp
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
