"""Which picture formats Iris reads, and why a file Pillow cannot identify is refused.

The list is what the installed Pillow can decode (WebP and AVIF are optional parts of a Pillow
build), so error messages and the app's open dialog never promise a format this copy cannot read.
A file Pillow does not recognise is sniffed for the common reasons (empty, a HEIC photo from a
phone, an SVG drawing) so the user learns what to do instead of "not supported".
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from PIL import features


@dataclass(frozen=True)
class ImageFormat:
    name: str  # as people know it
    extensions: tuple[str, ...]
    feature: str | None = None  # Pillow feature the format needs; None: always built in


KNOWN_FORMATS = (
    ImageFormat("PNG", ("png",)),
    ImageFormat("JPEG", ("jpg", "jpeg")),
    ImageFormat("WebP", ("webp",), "webp"),
    ImageFormat("AVIF", ("avif",), "avif"),
    ImageFormat("GIF", ("gif",)),
    ImageFormat("BMP", ("bmp",)),
    ImageFormat("TIFF", ("tif", "tiff")),
)


def readable_formats() -> list[ImageFormat]:
    """The formats the installed Pillow decodes."""
    return [f for f in KNOWN_FORMATS if f.feature is None or features.check(f.feature)]


def format_names() -> str:
    """'PNG, JPEG, ... or TIFF' for messages."""
    names = [f.name for f in readable_formats()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def file_patterns() -> str:
    """'*.png *.jpg ...' for file dialogs."""
    return " ".join(f"*.{ext}" for f in readable_formats() for ext in f.extensions)


# ISO base media file brands (the `ftyp` box at the start of HEIF/AVIF files).
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_SNIFF_BYTES = 4096


def explain_unreadable(name: str, head: bytes, path: Path | None = None) -> str:
    """Why a file Pillow could not identify is refused; `head` is the start of the file."""
    if not head:
        return f"{name} is empty (0 bytes)."
    brands = _ftyp_brands(head)
    if brands & _HEIC_BRANDS and not brands & _AVIF_BRANDS:
        return (
            f"{name} is a HEIC photo, which Iris cannot read yet; convert it to JPEG or PNG "
            "(most photo apps can export or share it as JPEG) and try again."
        )
    if brands & _AVIF_BRANDS:
        return (
            f"{name} is an AVIF picture, which this copy of Iris cannot read (it was built "
            "without AVIF support); convert it to JPEG or PNG and try again."
        )
    if _is_svg(head, path):
        return f"{name} is a vector drawing (SVG), which Iris cannot read; export it as a PNG picture and try again."
    return (
        f"{name} is not an image Iris can read (the file is not a {format_names()} picture, "
        "or its format is not supported)."
    )


def read_head(path: Path) -> bytes:
    """The first bytes of a file for sniffing; empty if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(_SNIFF_BYTES)
    except OSError:
        return b""


def _ftyp_brands(head: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO BMFF `ftyp` box, or an empty set."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(head[0:4], "big"), len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, size - 3, 4))
    return brands


def _is_svg(head: bytes, path: Path | None) -> bool:
    if head[:2] == b"\x1f\x8b" and path is not None and path.suffix.lower() == ".svgz":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except (OSError, EOFError):
            return True  # named .svgz and gzip-compressed: a broken drawing is still a drawing
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")) and b"<svg" in text
