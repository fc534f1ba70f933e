"""Settings survive a restart and shrug off bad values; chats round-trip and export to Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
from PySide6.QtCore import QSettings

from engine.image import detail_pixels
from engine.manifest import Manifest
from engine.sampling import SamplingOptions
from ui.chat_store import HistoryError, HistoryStore, TurnRecord, describe_stats, export_markdown
from ui.settings import AppSettings, load_settings, save_settings
from ui.settings_dialog import SettingsDialog, detail_summary


@dataclass(frozen=True)
class Estimate:  # as engine.estimate_image returns it
    tokens: int
    seconds: float | None


def test_defaults_are_the_checkpoints_own_sampling(settings_store):
    """A fresh install samples as the real checkpoint's generation_config.json says (plus the model
    card's presence penalty for images), which is also what the engine and the local API use."""
    import json

    from tests.fixtures.tiny_checkpoint import DATA

    settings = load_settings(settings_store)
    assert settings == AppSettings()  # nothing stored: the defaults
    checkpoint = json.loads((DATA / "generation_config.json").read_text())
    assert settings.sampling() == SamplingOptions.from_generation_config(checkpoint, presence_penalty=1.5)


def test_settings_written_by_one_qsettings_are_read_by_a_fresh_one(settings_file):
    chosen = AppSettings("high", 0.3, 0.9, 0, 0.5, 300, 2, "/models/iris")
    save_settings(chosen, QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat)) == chosen
    assert "temperature=0.3" in settings_file.read_text()


def test_unreadable_or_out_of_range_values_fall_back_to_defaults(settings_file):
    settings_file.write_text("[options]\nimage_detail=ultra\ntop_k=lots\n")
    loaded = load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert loaded.image_detail == "standard" and loaded.top_k == AppSettings().top_k
    settings_file.write_text("[options]\ntop_p=7\ntemperature=0.2\n")
    assert load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat)) == AppSettings()


def test_temperature_zero_decodes_greedily_as_the_engine_cli_does(settings_file):
    settings_file.write_text("[options]\ntemperature=0\ntop_k=5\n")
    loaded = load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert loaded.temperature == 0 and loaded.top_k == 5 and loaded.sampling().greedy
    # as `python -m engine --temperature 0`: no penalties, though the settings keep their presence penalty
    assert loaded.presence_penalty == 1.5 and loaded.sampling().presence_penalty == 0.0
    assert not AppSettings().sampling().greedy
    greedy = replace(AppSettings(), top_k=5, max_new_tokens=9).greedy()
    assert greedy.sampling() == SamplingOptions(
        temperature=0.0, top_k=5, presence_penalty=0.0, max_new_tokens=9, greedy=True
    )


def test_invalid_settings_are_refused_before_they_are_stored(settings_store):
    with pytest.raises(ValueError, match="top_p"):
        save_settings(replace(AppSettings(), top_p=0.0), settings_store)


def test_the_detail_text_predicts_the_wait_of_each_choice_from_the_engine_estimate():
    measured = {"standard": Estimate(256, 10.4), "high": Estimate(1000, 55.0)}
    calls = []

    def estimate(w, h, detail):
        calls.append((w, h, detail))
        return measured[detail]

    text = detail_summary("high", (2000, 1000), estimate)
    assert text == (
        "The current image (2000×1000) at high detail: 1000 image tokens, about 55 s to read on this "
        "computer. At standard detail: 256 image tokens, about 10 s to read."
    )
    assert sorted(calls) == [(2000, 1000, "high"), (2000, 1000, "standard")]
    unmeasured = detail_summary("standard", (2000, 1000), lambda w, h, d: Estimate(measured[d].tokens, None))
    assert "256 image tokens." in unmeasured and " s to read" not in unmeasured
    assert unmeasured.endswith("shows once this computer's speed is measured.")
    assert "once the model is loaded" in detail_summary("high", (20, 10), None)


def test_each_detail_says_the_most_tokens_an_image_takes_there(qtbot):
    dialog = SettingsDialog(AppSettings())  # no model loaded: the engine's rule, default image settings
    qtbot.addWidget(dialog)
    labels = [dialog.detail.itemText(i) for i in range(dialog.detail.count())]
    assert labels == ["Standard (up to 256 tokens per image)", "High (up to 1024 tokens per image)"]
    asked = []
    loaded = SettingsDialog(AppSettings(), cost=lambda w, h, d: asked.append((w, h, d)) or Estimate(7, None))
    qtbot.addWidget(loaded)
    assert loaded.detail.itemText(0) == "Standard (up to 7 tokens per image)"  # the loaded model counts
    assert all(w == h and w * h > detail_pixels(d) for w, h, d in asked)  # a square over the budget


def test_scratch_settings_start_from_the_users_choices_and_leave_them_alone(settings_file, tmp_path):
    from ui.settings import open_qsettings, use_scratch_settings

    save_settings(replace(AppSettings(), threads=3, image_detail="high"), open_qsettings())
    real = tmp_path / "qsettings" / "Iris" / "Iris.ini"
    before = real.read_bytes()
    store = use_scratch_settings(tmp_path / "scratch")
    assert load_settings(store) == replace(AppSettings(), threads=3, image_detail="high")
    save_settings(replace(AppSettings(), threads=1), open_qsettings())  # any later store is the copy too
    assert real.read_bytes() == before
    assert load_settings(store).threads == 1


def test_dialog_shows_and_returns_settings(qtbot):
    chosen = AppSettings("high", 0.3, 0.9, 0, 0.5, 300, 1, "/x")
    dialog = SettingsDialog(chosen, (1600, 900), lambda w, h, d: Estimate(42 if d == "standard" else 99, None))
    qtbot.addWidget(dialog)
    assert dialog.settings() == chosen
    assert "at high detail: 99 image tokens" in dialog.detail_info.text()
    dialog.detail.setCurrentIndex(dialog.detail.findData("standard"))
    assert "at standard detail: 42 image tokens" in dialog.detail_info.text()
    dialog.temperature.setValue(1.1)
    assert dialog.settings().temperature == pytest.approx(1.1)
    dialog.set_settings(AppSettings())
    assert dialog.settings() == AppSettings()


def test_dialog_names_the_processor(qtbot, monkeypatch):
    from engine import cpu
    from ui import settings_dialog

    zen1 = cpu.CpuInfo("AMD", "AMD EPYC 7551", "x86_64", frozenset({"avx2", "fma"}), 2, 4)
    monkeypatch.setattr(settings_dialog, "cpu_info", lambda: zen1)
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert dialog.processor.text() == "AMD EPYC 7551, AVX2, no int8 matrix units, 2 cores"
    assert dialog.threads.specialValueText() == "automatic (2)"


def test_check_the_model_files_reports_intact_files_and_a_damaged_one(qtbot, tiny_int4, tmp_path, monkeypatch):
    """The full check runs off the GUI thread and says what it found, in both outcomes."""
    import shutil
    import threading

    from PySide6.QtCore import Qt

    import ui.file_check

    folder = tmp_path / "model"
    shutil.copytree(tiny_int4, folder)
    hashing_threads = []
    real = ui.file_check.check_model_files

    def spy(*args):
        hashing_threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(ui.file_check, "check_model_files", spy)
    dialog = SettingsDialog(replace(AppSettings(), model_dir=str(folder)))
    qtbot.addWidget(dialog)

    qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "intact" in dialog.check_result.text(), timeout=30_000)
    count = len(Manifest.load(folder).files)
    assert dialog.check_result.text() == f"All {count} files are intact."
    qtbot.waitUntil(dialog.check_button.isEnabled, timeout=5_000)

    data = folder / "vision.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "damaged" in dialog.check_result.text(), timeout=30_000)
    assert "vision.onnx.data is damaged" in dialog.check_result.text()
    assert "Run the model setup again" in dialog.check_result.text()
    qtbot.waitUntil(dialog.check_button.isEnabled, timeout=5_000)
    assert len(hashing_threads) == 2 and threading.main_thread() not in hashing_threads


def test_closing_the_dialog_stops_a_running_check(qtbot, tiny_int4, monkeypatch):
    import threading

    import ui.file_check

    started, stopped = threading.Event(), []

    def slow_check(folder, progress, should_stop):
        started.set()
        while not should_stop():
            threading.Event().wait(0.01)
        stopped.append(True)

    monkeypatch.setattr(ui.file_check, "check_model_files", slow_check)
    dialog = SettingsDialog(AppSettings(), default_model_dir=tiny_int4)
    qtbot.addWidget(dialog)
    dialog.check_model_files()
    assert started.wait(10) and not dialog.check_button.isEnabled()
    dialog.reject()
    assert stopped == [True]


def test_the_local_api_setting_is_off_by_default_and_shows_a_copyable_example(qtbot, settings_file):
    from PySide6.QtGui import QGuiApplication

    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert not dialog.serve_local.isChecked() and dialog.serve_url.text() == "off"
    assert not dialog.serve_copy.isEnabled() and dialog.serve_example.toPlainText() == ""
    dialog.serve_local.setChecked(True)
    dialog.serve_port.setValue(9123)
    assert dialog.serve_url.text() == "http://127.0.0.1:9123/v1"
    example = dialog.serve_example.toPlainText()
    assert example.startswith("curl http://127.0.0.1:9123/v1/chat/completions") and '"messages"' in example
    dialog.serve_copy.click()
    assert QGuiApplication.clipboard().text() == example
    chosen = dialog.settings()
    assert chosen.serve_fields() == (True, 9123)
    save_settings(chosen, QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat)) == chosen
    settings_file.write_text("[options]\nserve_local=true\nserve_port=99999\n")
    loaded = load_settings(QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert loaded.serve_fields() == (True, AppSettings().serve_port)


def _stats(**overrides) -> dict:
    values = dict(
        image_tokens=256,
        prompt_tokens=280,
        new_tokens=12,
        vision_seconds=1.0,
        prefill_seconds=0.5,
        time_to_first_token=1.6,
        decode_tokens_per_second=8.25,
        stop_reason="eos",
        context_used=300,
        context_limit=8192,
    )
    values.update(overrides)
    return values


def test_describe_stats():
    assert describe_stats(_stats()) == "256 image tokens · first token 1.60 s · 8.2 tokens/s · 12 tokens"
    assert describe_stats(_stats(ahead_tokens=270)) == (
        "256 image tokens · first token 1.60 s · image read while you typed · 8.2 tokens/s · 12 tokens"
    )
    assert describe_stats(_stats(image_tokens=0, stop_reason="cancelled")).endswith("12 tokens · stopped")
    assert describe_stats(None) == ""


def test_conversation_round_trip_with_image_copies(tmp_path, make_image):
    store = HistoryStore(tmp_path / "history")
    record = store.new_record("tiny")
    original = make_image("cat.png", 300, 200)
    name = store.add_image(record, original)
    assert store.add_image(record, original) == name  # stored once per content
    record.turns.append(TurnRecord("What is **this**?", [name], "A cat.", _stats()))
    store.save(record)
    original.unlink()  # the saved chat keeps its own copy

    (summary,) = store.list()
    assert (summary.title, summary.turn_count) == ("What is **this**?", 1)
    loaded = store.load(record.id)
    assert loaded.turns == record.turns
    assert store.image_path(record.id, name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "export").mkdir()
    text = export_markdown(loaded, store, tmp_path / "export" / "chat.md").read_text()
    assert f"![image](chat_images/{name})" in text
    assert (tmp_path / "export" / "chat_images" / name).exists()
    assert "## You" in text and "What is **this**?" in text and "A cat." in text
    assert "256 image tokens" in text


def test_broken_history_is_reported_or_skipped(tmp_path):
    store = HistoryStore(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "conversation.json").write_text("{not json")
    assert store.list() == []
    with pytest.raises(HistoryError, match="Could not open"):
        store.load("bad")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "conversation.json").write_text(json.dumps({"version": 99, "turns": []}))
    with pytest.raises(HistoryError, match="another version"):
        store.load("old")
