"""The "Faster first answer" box: an extra int8 prompt graph, its disk space, and who may tick it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from engine.manifest import Manifest
from exporter.config import load_config
from exporter.export import ExportOptions, estimate_bytes, free_space_needed
from tests.ui_wizard import WAIT_MS, choose_folder, click, finish_button, make_wizard, next_button, wait_page
from ui.wizard import memory
from ui.wizard.choice import PageId
from ui.wizard.units import human_bytes


@pytest.fixture
def plenty_of_ram(monkeypatch):
    monkeypatch.setattr(memory, "total_ram_bytes", lambda: 32_000_000_000)


def space_needed(checkpoint: Path, prefill: str | None) -> int:
    """What the exporter demands free before converting the tiny checkpoint with these options."""
    config, _ = load_config(checkpoint)
    return free_space_needed(estimate_bytes(config, ExportOptions("int4", prefill=prefill)))


@pytest.mark.parametrize("tick", [False, True], ids=["default", "ticked"])
def test_the_box_decides_whether_a_prefill_graph_is_written(qtbot, tiny_checkpoint, tmp_path, plenty_of_ram, tick):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    box = wizard.choose_page.prefill_check
    assert box.isEnabled() and not box.isChecked(), "offered, but off unless the user asks"
    if tick:
        click(qtbot, box)
    click(qtbot, next_button(wizard))
    wait_page(qtbot, wizard, PageId.VERIFY)
    qtbot.waitUntil(lambda: finish_button(wizard).isEnabled(), timeout=WAIT_MS)  # the engine loads it and runs

    model = tmp_path / "model"
    manifest = Manifest.load(model)
    assert (model / "decoder_prefill.onnx").is_file() == tick
    assert manifest.weights.prefill == ("int8" if tick else None)
    assert manifest.decoder.prefill_file == ("decoder_prefill.onnx" if tick else None)


def test_ticking_grows_the_space_needed_and_only_the_ticked_variant_is_refused(
    qtbot, tiny_checkpoint, tmp_path, monkeypatch, plenty_of_ram
):
    plain, fast = space_needed(tiny_checkpoint[0], None), space_needed(tiny_checkpoint[0], "int8")
    assert fast > plain
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real._replace(free=(plain + fast) // 2))
    wizard = make_wizard(qtbot, tmp_path / "model")
    page = wizard.choose_page
    choose_folder(qtbot, wizard, tiny_checkpoint[0])

    assert f"(needed: {human_bytes(plain)})" in page.summary_label.text()
    assert next_button(wizard).isEnabled() and not page.problem_label.isVisible()

    click(qtbot, page.prefill_check)
    assert f"(needed: {human_bytes(fast)})" in page.summary_label.text()
    assert "for the faster first answer" in page.summary_label.text()
    assert "Not enough free disk space" in page.problem_label.text()
    assert not next_button(wizard).isEnabled()

    click(qtbot, page.prefill_check)  # untick: it fits again
    assert next_button(wizard).isEnabled() and not page.problem_label.isVisible()


def test_too_little_ram_disables_the_box_and_says_why(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "total_ram_bytes", lambda: 8 * 1024**3)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    page = wizard.choose_page
    assert not page.prefill_check.isEnabled() and not page.prefill_check.isChecked()
    assert "needs at least 12 GB of memory, this computer has 8.6 GB" in page.prefill_hint.text()

    click(qtbot, next_button(wizard))
    assert wizard.choice.export_options().prefill is None


def test_an_iris_model_folder_is_used_as_is_so_the_box_is_off(qtbot, tiny_int4, tmp_path, plenty_of_ram):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_int4)
    assert not wizard.choose_page.prefill_check.isEnabled()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux's")
def test_total_ram_is_what_the_kernel_reports(tmp_path, monkeypatch):
    assert memory.total_ram_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:        8000000 kB\nMemFree:         1000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", fake)
    assert memory.total_ram_bytes() == 8000000 * 1024
    assert memory.fast_prefill_blocker(8000000 * 1024) != ""
    assert memory.fast_prefill_blocker(16 * 1024**3) == ""
    assert memory.fast_prefill_blocker(None) == "", "unknown RAM: offered, the user decides"


@pytest.mark.parametrize(
    "int8_gops,enabled,ticked,words",
    [
        (105.0, False, False, "Not offered: measured on this computer (a test CPU), it would read questions only 1.0x"),
        (200.0, True, False, "Measured on this computer: questions about an image are read about 1.5x faster"),
        (700.0, True, True, "Measured on this computer: questions about an image are read about 2.5x faster"),
    ],
    ids=["no gain", "some gain", "large gain"],
)
def test_the_box_follows_the_measurement_on_this_computer(
    qtbot, tiny_checkpoint, tmp_path, monkeypatch, plenty_of_ram, int8_gops, enabled, ticked, words
):
    from exporter.probes.prompt_graph import PromptGraphAdvice
    from ui.wizard import choose_page

    advice = PromptGraphAdvice("a test CPU", int4_gops=100.0, int8_gops=int8_gops)
    monkeypatch.setattr(choose_page, "measure_prompt_graph_advice", lambda: advice)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    page = wizard.choose_page
    assert words in page.prefill_hint.text()
    assert page.prefill_check.isEnabled() == enabled and page.prefill_check.isChecked() == ticked
    click(qtbot, next_button(wizard))
    assert wizard.choice.export_options().prefill == ("int8" if ticked else None)


def test_the_box_waits_for_the_measurement(qtbot, tmp_path, monkeypatch, plenty_of_ram):
    import threading

    from ui.wizard import choose_page
    from ui.wizard.choose_page import MEASURING_HINT

    release = threading.Event()

    def slow():
        release.wait(10)
        return choose_page.PromptGraphAdvice("a test CPU", 100.0, 200.0)

    monkeypatch.setattr(choose_page, "measure_prompt_graph_advice", slow)
    from ui.wizard import SetupWizard

    wizard = SetupWizard(tmp_path / "model")
    qtbot.addWidget(wizard)
    page = wizard.choose_page
    try:
        assert page.measuring and page.prefill_hint.text() == MEASURING_HINT
        assert not page.prefill_check.isEnabled()
    finally:
        release.set()
    qtbot.waitUntil(lambda: not page.measuring, timeout=WAIT_MS)
    assert "1.5x faster" in page.prefill_hint.text()
    page.stop_work()
