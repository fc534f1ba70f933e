"""The open dialog offers every format the engine's loader reads, and what it offers is accepted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import features
from PySide6.QtWidgets import QFileDialog

from engine.image_formats import readable_formats
from ui.image_pane import ImagePane


def test_the_open_dialog_offers_avif_and_the_pane_accepts_it(qtbot, tmp_path, make_image, monkeypatch):
    if not features.check("avif"):
        pytest.skip("Pillow built without AVIF")
    pane = ImagePane(lambda: tmp_path)
    qtbot.addWidget(pane)
    photo = make_image("photo.avif", 320, 240)
    offered = {}

    def choose(parent, caption, folder, filters):
        offered["filters"] = filters
        return [str(photo)], filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", choose)
    with qtbot.waitSignal(pane.imagesChanged):
        pane.open_dialog()
    patterns = re.match(r"Images \(([^)]*)\)", offered["filters"]).group(1).split()
    assert "*.avif" in patterns
    assert pane.pending() == [photo] and (pane.images()[0].width, pane.images()[0].height) == (320, 240)
    corner = pane.images()[0].pixmap.toImage().pixelColor(5, 5)  # make_image's blue square
    assert abs(corner.red() - 30) < 20 and abs(corner.green() - 90) < 20 and abs(corner.blue() - 200) < 20


def test_every_offered_pattern_is_a_format_the_engine_reads(tmp_path, make_image):
    from engine.image import load_image
    from ui.image_pane import IMAGE_FILTER

    patterns = re.match(r"Images \(([^)]*)\)", IMAGE_FILTER).group(1).split()
    assert patterns == [f"*.{ext}" for f in readable_formats() for ext in f.extensions]
    for pattern in patterns:
        path: Path = make_image("picture" + pattern[1:], 64, 48)
        assert load_image(path).size == (64, 48), pattern


def test_an_image_too_large_for_qt_still_shows(qtbot, tmp_path, make_image):
    """Qt refuses to decode images over its allocation limit (256 MB: about 67 megapixels); the
    engine reads up to Pillow's error threshold, so the pane shows a preview made by Pillow."""
    from PySide6.QtGui import QImageReader

    pane = ImagePane(lambda: tmp_path)
    qtbot.addWidget(pane)
    path = make_image("large.png", 1600, 1000)  # 6.4 MB as RGBA
    limit = QImageReader.allocationLimit()
    QImageReader.setAllocationLimit(4)  # MB: stands in for a photo of 100 megapixels
    try:
        with qtbot.waitSignal(pane.imagesChanged):
            pane.add_files([path])
    finally:
        QImageReader.setAllocationLimit(limit)
    (image,) = pane.images()
    assert (image.width, image.height) == (1600, 1000)
    assert not image.pixmap.isNull() and image.pixmap.width() / image.pixmap.height() == 1.6
    corner = image.pixmap.toImage().pixelColor(5, 5)
    assert (corner.red(), corner.green(), corner.blue()) == (30, 90, 200)
