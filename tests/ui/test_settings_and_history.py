"""Settings survive a restart and shrug off bad values; chats round-trip and export to Markdown."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PySide6.QtCore import QSettings

from engine.sampling import SamplingOptions
from ui.history import HistoryError, HistoryStore, TurnRecord, describe_stats, export_markdown
from ui.settings import AppSettings, SpeedRecord, load_settings, load_speed, save_settings, save_speed
from ui.settings_dialog import SettingsDialog, detail_summary


def test_defaults_follow_the_engine_sampling_defaults(settings_store):
    settings = load_settings(settings_store)
    assert settings == AppSettings()
    assert settings.sampling() == SamplingOptions()


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


def test_invalid_settings_are_refused_before_they_are_stored(settings_store):
    with pytest.raises(ValueError, match="top_p"):
        save_settings(replace(AppSettings(), top_p=0.0), settings_store)


def test_speed_record_and_the_detail_estimate(settings_store):
    assert load_speed(settings_store).seconds_for_image(256) is None
    save_speed(SpeedRecord(0.05, 200.0, 9.0), settings_store)
    speed = load_speed(settings_store)
    assert speed.seconds_for_image(256) == pytest.approx(256 * (0.05 + 1 / 200))
    text = detail_summary("high", (2000, 1000), lambda w, h, d: {"standard": 256, "high": 1000}[d], speed)
    assert "1000 image tokens" in text and "about 55 s" in text
    assert "once the model is loaded" in detail_summary("high", (20, 10), None, speed)


def test_dialog_shows_and_returns_settings(qtbot):
    chosen = AppSettings("high", 0.3, 0.9, 0, 0.5, 300, 1, "/x")
    dialog = SettingsDialog(chosen, (1600, 900), lambda w, h, d: 42 if d == "standard" else 99)
    qtbot.addWidget(dialog)
    assert dialog.settings() == chosen
    assert "99 image tokens" in dialog.detail_info.text()
    dialog.detail.setCurrentIndex(dialog.detail.findData("standard"))
    assert "42 image tokens" in dialog.detail_info.text()
    dialog.temperature.setValue(1.1)
    assert dialog.settings().temperature == pytest.approx(1.1)
    dialog.set_settings(AppSettings())
    assert dialog.settings() == AppSettings()


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
    values = dict(image_tokens=256, prompt_tokens=280, new_tokens=12, vision_seconds=1.0,
                  prefill_seconds=0.5, time_to_first_token=1.6, decode_tokens_per_second=8.25,
                  stop_reason="eos", context_used=300, context_limit=8192)
    values.update(overrides)
    return values


def test_describe_stats():
    assert describe_stats(_stats()) == "256 image tokens · first token 1.60 s · 8.2 tokens/s · 12 tokens"
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
