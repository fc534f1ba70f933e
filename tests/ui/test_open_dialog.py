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
    assert not pane.images()[0].pixmap.isNull()


def test_every_offered_pattern_is_a_format_the_engine_reads(tmp_path, make_image):
    from engine.image import load_image
    from ui.image_pane import IMAGE_FILTER

    patterns = re.match(r"Images \(([^)]*)\)", IMAGE_FILTER).group(1).split()
    assert patterns == [f"*.{ext}" for f in readable_formats() for ext in f.extensions]
    for pattern in patterns:
        path: Path = make_image("picture" + pattern[1:], 64, 48)
        assert load_image(path).size == (64, 48), pattern
