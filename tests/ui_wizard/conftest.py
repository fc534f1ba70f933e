"""Fixtures every wizard test uses: a local fake Hub serving the tiny checkpoint, and no wizard
(or its threads) left behind after a test."""

from __future__ import annotations

import pytest

from exporter.probes.prompt_graph import PromptGraphAdvice
from tests.ui_wizard import close_wizards, serve
from ui.wizard import choose_page

# What the kernel measurement says on a machine where the int8 prompt graph pays a little: offered,
# not ticked. Real timings vary with the CPU and its load; tests that need another verdict patch it.
OFFERED = PromptGraphAdvice("a test CPU", int4_gops=100.0, int8_gops=200.0)


@pytest.fixture(autouse=True)
def _measured_advice(monkeypatch):
    monkeypatch.setattr(choose_page, "measure_prompt_graph_advice", lambda: OFFERED)


@pytest.fixture(autouse=True)
def _close_wizards():
    yield
    close_wizards()


@pytest.fixture
def hub(tiny_checkpoint, tmp_path, monkeypatch):
    with serve(tiny_checkpoint[0], monkeypatch, tmp_path / "hf_home") as fake:
        yield fake
        close_wizards()  # while the hub still answers
