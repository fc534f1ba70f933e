"""The "Faster long conversations" box: an fp32 KV cache, offered from a measurement on this computer."""

from __future__ import annotations

import time

import pytest

from engine.manifest import Manifest
from exporter.probes.kv_cache import KvCacheAdvice
from tests.ui_wizard import WAIT_MS, choose_folder, click, finish_button, make_wizard, next_button, wait_page
from ui.wizard import choose_page, memory
from ui.wizard.choice import PageId


@pytest.mark.parametrize("tick", [False, True], ids=["default", "ticked"])
def test_the_box_decides_the_cache_type_the_model_is_exported_with(qtbot, tiny_checkpoint, tmp_path, tick):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    box = wizard.choose_page.kv_check
    assert box.isEnabled() and not box.isChecked(), "offered, but off unless the user asks"
    if tick:
        click(qtbot, box)
    click(qtbot, next_button(wizard))
    wait_page(qtbot, wizard, PageId.VERIFY)
    qtbot.waitUntil(lambda: finish_button(wizard).isEnabled(), timeout=WAIT_MS)  # the engine loads it and runs

    assert Manifest.load(tmp_path / "model").decoder.kv_dtype == ("fp32" if tick else "fp16")


@pytest.mark.parametrize(
    "fp32_ms,enabled,ticked,words",
    [
        (4.0, False, False, "Not offered: measured on this computer (a test CPU), answers in long conversations "),
        (2.5, True, False, "Measured on this computer: answers late in a long conversation come about 1.2x faster"),
        (1.0, True, True, "Measured on this computer: answers late in a long conversation come about 1.5x faster"),
    ],
    ids=["no gain", "some gain", "large gain"],
)
def test_the_box_follows_the_measurement_on_this_computer(
    qtbot, tiny_checkpoint, tmp_path, monkeypatch, fp32_ms, enabled, ticked, words
):
    advice = KvCacheAdvice("a test CPU", attention_fp16_ms=4.0, attention_fp32_ms=fp32_ms, weights_ms=200.0)
    monkeypatch.setattr(choose_page, "measure_kv_cache_advice", lambda: advice)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    page = wizard.choose_page
    assert words in page.kv_hint.text() and "more memory" in page.kv_hint.text()
    assert page.kv_check.isEnabled() == enabled and page.kv_check.isChecked() == ticked
    click(qtbot, next_button(wizard))
    assert wizard.choice.export_options().kv_cache == ("fp32" if ticked else None)


def test_fp32_weights_have_an_fp32_cache_anyway_so_the_box_is_off(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    suggested = KvCacheAdvice("a test CPU", attention_fp16_ms=4.0, attention_fp32_ms=1.0, weights_ms=200.0)
    monkeypatch.setattr(choose_page, "measure_kv_cache_advice", lambda: suggested)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    page = wizard.choose_page
    assert page.kv_check.isEnabled() and page.kv_check.isChecked()
    page.precision_combo.setCurrentIndex(page.precision_combo.findData("fp32"))
    assert not page.kv_check.isEnabled()
    click(qtbot, next_button(wizard))
    assert wizard.choice.export_options().kv_cache is None
    assert wizard.choice.export_options().kv_cache_format() == "fp32"


def test_ticking_does_not_change_the_disk_space_needed(qtbot, tiny_checkpoint, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    page = wizard.choose_page
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    before = page.summary_label.text()
    assert "(needed: " in before
    click(qtbot, page.kv_check)
    assert page.summary_label.text() == before


@pytest.mark.parametrize("ram", [32_000_000_000, 8 * 1024**3], ids=["both measured", "too little RAM for int8"])
def test_the_measurements_run_one_after_the_other(qtbot, tmp_path, monkeypatch, ram):
    """Two kernel timings at once would share the cores, and each would read the other's load."""
    monkeypatch.setattr(memory, "total_ram_bytes", lambda: ram)
    running, overlaps, ran = [], [], []

    def timed(name, result):
        def measure():
            running.append(name)
            overlaps.append(len(running) > 1)
            time.sleep(0.2)
            running.remove(name)
            ran.append(name)
            return result

        return measure

    no_gain = choose_page.PromptGraphAdvice("c", 1.0, 1.0)
    monkeypatch.setattr(choose_page, "measure_prompt_graph_advice", timed("prompt", no_gain))
    monkeypatch.setattr(choose_page, "measure_kv_cache_advice", timed("kv", KvCacheAdvice("c", 1.0, 1.0, 1.0)))
    wizard = make_wizard(qtbot, tmp_path / "model")
    assert ran == (["prompt", "kv"] if ram > 16 * 1024**3 else ["kv"]) and not any(overlaps)
    assert "only 1.00x faster" in wizard.choose_page.kv_hint.text()


def test_a_failed_measurement_says_so_and_the_box_stays_off(qtbot, tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("no attention kernel here")

    monkeypatch.setattr(choose_page, "measure_kv_cache_advice", broken)
    wizard = make_wizard(qtbot, tmp_path / "model")
    page = wizard.choose_page
    assert "could not be measured on this computer (no attention kernel here)" in page.kv_hint.text()
    assert not page.kv_check.isEnabled()
    assert page.prefill_check.isEnabled(), "the other measurement is not affected"
