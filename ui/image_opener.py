"""Opening an image for the pane (and a reopened chat's thumbnails for the conversation), on a
thread of its own.

Checking a file with the engine's loader and decoding it for display takes about 0.2 s for a
12-megapixel photo, longer for a batch, so the GUI thread must not do it: it would freeze the
window. A one-thread pool opens the files one at a time, in the order asked, and sends back a
QImage (thread-safe, unlike QPixmap, which the GUI thread makes from it) or the message to show.
A file nobody waits for any more is skipped; closing drops the files not started yet and waits
for the one being opened, so no thread outlives the window and no result arrives after it.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import ImageOps
from PIL.Image import Image as PILImage
from PySide6.QtCore import QObject, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageReader

from engine.errors import ImageError
from engine.image import load_image

THUMB = 64  # pixels: the side of a thumbnail
PREVIEW_SIDE = 4096  # pixels; the pane never shows more, and Qt refuses images over its allocation limit


@dataclass(frozen=True)
class OpenedImage:
    """What the pane needs of an accepted file."""

    width: int  # after EXIF orientation, as the engine sees it
    height: int
    preview: QImage  # upright, at most PREVIEW_SIDE a side
    thumbnail: QImage  # at most THUMB a side
    saved_as: Path | None = None  # where a pasted bitmap was written (its name comes from its pixels)


def read_image(path: Path, upright: PILImage | None = None) -> QImage:
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
    return image


def open_image(path: Path) -> OpenedImage:
    """Check `path` with the engine's loader (same checks, same orientation) and decode it for
    display; raises ImageError or OSError with what is wrong."""
    upright = load_image(path)
    preview = read_image(path, upright)
    # In the format QPixmap uses, so that making the pixmap on the GUI thread is a plain copy.
    preview = preview.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    thumbnail = preview.scaled(
        THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )
    return OpenedImage(upright.width, upright.height, preview, thumbnail)


def thumbnail_image(path: Path) -> QImage:
    """A thumbnail of a file already accepted (a reopened chat's image in the conversation),
    upright. Qt decodes it at thumbnail size (JPEG scales while decoding), not the whole photo;
    formats Qt lacks, and images over its allocation limit, take the full path."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    stored = reader.size()  # as stored: the scaled size applies before the EXIF rotation
    image = QImage()
    if stored.isValid() and not stored.isEmpty():
        reader.setScaledSize(stored.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
    if image.isNull():
        image = read_image(path)
    return image.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


def pasted_name(pixels: QImage) -> str:
    """A pasted bitmap's file name, from its size and pixels: the same paste twice is one file."""
    digest = hashlib.sha256(f"{pixels.width()}x{pixels.height()}".encode() + bytes(pixels.constBits()))
    return f"pasted-{digest.hexdigest()[:16]}.png"


def save_and_open(image: QImage, folder: Path) -> OpenedImage:
    """Write a pasted bitmap into `folder` as PNG, named after its pixels (unless the same pixels
    were saved there before), then open it like any file. Converting, hashing and encoding a large
    bitmap take about a second: this runs on the pool thread. The PNG appears under its name only
    once complete, so a failed write leaves nothing to reuse."""
    pixels = image.convertToFormat(QImage.Format.Format_RGBA8888)  # one layout, whatever the source's
    path = folder / pasted_name(pixels)
    if not path.exists():
        partial = path.with_name(path.name + ".part")
        if not pixels.save(str(partial), "PNG"):
            partial.unlink(missing_ok=True)
            raise ImageError(f"Could not save the pasted image in {folder}: is the disk full or read-only?")
        partial.replace(path)
    return replace(open_image(path), saved_as=path)


def refusal(path: Path, error: Exception) -> str:
    """The one line the pane shows for a file it cannot take."""
    if isinstance(error, ImageError):
        return str(error)
    if isinstance(error, OSError):
        return f"Could not read {path.name}: {error.strerror or error}"
    return f"Could not read {path.name}: {error}"


class ImageOpener(QObject):
    """Opens files on one pool thread, each with the function asked for (open_image: the pane's
    check and decoding; thumbnail_image: a conversation thumbnail); `opened` brings each result
    back to the GUI thread. One opener serves the whole window, so that one decode runs at a time."""

    opened = Signal(int, object)  # ticket, what the open function returned or the refusal message (str)
    _finished = Signal(int, object)  # from the pool thread; re-checked on the GUI thread before `opened`

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # in order, and one big decode at a time on a shared CPU
        self._closed = threading.Event()
        self._tickets = itertools.count(1)
        self._dropped: set[int] = set()  # tickets nobody waits for any more (read by the pool thread)
        self._lock = threading.Lock()
        # Queued: a result emitted just before close() is still checked, on this thread, after it.
        self._finished.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def open(self, path: Path, open_file: Callable[[Path], object] = open_image) -> int:
        """Start opening `path` with `open_file`; returns the ticket its result comes with."""
        ticket = next(self._tickets)
        if not self._closed.is_set():
            self._pool.start(lambda: self._run(ticket, Path(path), open_file))
        return ticket

    def drop(self, tickets: Iterable[int]) -> None:
        """Nobody waits for these any more (a file removed, a chat left): a file not started is
        skipped, so the files asked for next do not queue behind it, and no result comes."""
        with self._lock:
            self._dropped.update(tickets)

    def close(self) -> None:
        """Drop the files not started, wait for the one being opened; nothing is sent after."""
        self._closed.set()
        self._pool.clear()
        self._pool.waitForDone()

    def _run(self, ticket: int, path: Path, open_file: Callable[[Path], object]) -> None:
        if self._closed.is_set() or self._was_dropped(ticket):
            return
        try:
            result = open_file(path)
        except Exception as error:  # noqa: BLE001 - any failure is a refused file, never a dead thread
            result = refusal(path, error)
        self._finished.emit(ticket, result)

    def _deliver(self, ticket: int, result: object) -> None:
        if not self._closed.is_set() and not self._was_dropped(ticket):
            self.opened.emit(ticket, result)

    def _was_dropped(self, ticket: int) -> bool:
        """True once for a dropped ticket (it is forgotten then: no result of it comes later)."""
        with self._lock:
            if ticket in self._dropped:
                self._dropped.discard(ticket)
                return True
            return False
