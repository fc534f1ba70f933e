"""Qwen-style grounding boxes found in an answer (Qt-free; ui/grounding.py draws them).

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

SCALE = 1000.0
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
