"""The rows of the image pane's list, and how each is shown: an image accepted into the chat, or a
file still being opened (listed at once, in its place, until the opener is done with it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QListWidgetItem

from ui.grounding_parser import GroundingBox
from ui.image_opener import THUMB
from ui.waits import about, image_cost


@dataclass
class AttachedImage:
    path: Path
    width: int  # after EXIF orientation, as the engine sees it
    height: int
    pixmap: QPixmap
    thumbnail: QPixmap
    sent: bool = False
    tokens: int | None = None
    seconds: float | None = None  # predicted reading time on this computer (None: not measured yet)
    read: bool = False  # pending, and already read by the engine: a question about it starts at once
    boxes: list[GroundingBox] = field(default_factory=list)


@dataclass
class OpeningImage:
    """A file listed as it was added, while the opener checks it; it is not an image of the chat
    (not pending, not shown) until it is accepted, and takes its place in the list then."""

    path: Path
    sent: bool
    ticket: int
    batch: int  # the files added together: their refusals are told together, once all are done


def fill_item(item: QListWidgetItem, row: AttachedImage | OpeningImage) -> None:
    """Make `item` show `row`: its thumbnail, its cost under it, the details as a tooltip."""
    if isinstance(row, OpeningImage):
        blank = QPixmap(THUMB, THUMB)
        blank.fill(Qt.GlobalColor.transparent)
        item.setIcon(QIcon(blank))
        item.setText("opening…")
        item.setToolTip(f"{row.path.name}\nBeing opened")
        return
    item.setIcon(QIcon(row.thumbnail))
    item.setText(thumbnail_text(row))
    item.setToolTip(
        f"{row.path.name}\n{row.width}×{row.height} pixels\n"
        + (f"{row.tokens} image tokens" if row.tokens is not None else "cost: load a model")
        + (f", {about(row.seconds)} to read on this computer" if row.seconds is not None and not row.sent else "")
        + ("\nAlready in the conversation" if row.sent else "\nSent with your next question")
    )


def describe_row(row: AttachedImage | OpeningImage | None) -> str:
    """The line under the canvas for the selected row."""
    if row is None:
        return ""
    if isinstance(row, OpeningImage):
        return f"{row.path.name} · opening…"
    cost = "" if row.tokens is None else f" · {row.tokens} image tokens"
    if row.read and not row.sent:
        cost = f" · {row.tokens} image tokens, already read"
    elif row.seconds is not None and not row.sent:
        cost = f" · {image_cost(row.tokens, row.seconds)} to read"
    state = "in the conversation" if row.sent else "will be sent with your next question"
    return f"{row.path.name} · {row.width}×{row.height}{cost} · {state}"


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
