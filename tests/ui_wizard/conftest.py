"""Fixtures every wizard test uses: a local fake Hub serving the tiny checkpoint, and no wizard
(or its threads) left behind after a test."""
from __future__ import annotations

import pytest

from tests.ui_wizard import close_wizards, serve


@pytest.fixture(autouse=True)
def _close_wizards():
    yield
    close_wizards()


@pytest.fixture
def hub(tiny_checkpoint, tmp_path, monkeypatch):
    with serve(tiny_checkpoint[0], monkeypatch, tmp_path / "hf_home") as fake:
        yield fake
        close_wizards()  # while the hub still answers
