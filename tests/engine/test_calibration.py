"""The first-load measurement: it gives every read a predicted time, is stored per model and
CPU so it runs once, and stops between steps when the app needs the engine."""

from __future__ import annotations

import json

from engine.engine import Engine, EngineOptions
from engine.events import StatusEvent
from tests.reference import random_image


def counting(engine, monkeypatch) -> list:
    calls = []
    original = engine.vision.encode
    monkeypatch.setattr(engine.vision, "encode", lambda pv, grid: calls.append(grid) or original(pv, grid))
    return calls


def test_calibration_predicts_reads_and_runs_once(tiny_fp32, tmp_path, monkeypatch):
    speed_file = tmp_path / "speeds.json"
    engine = Engine(tiny_fp32, EngineOptions(speed_file=speed_file))
    assert engine.estimate_image(448, 448).seconds is None  # nothing measured yet
    assert engine.calibrate()
    estimate = engine.estimate_image(448, 448)
    assert estimate.tokens == engine.image_tokens(448, 448) and estimate.seconds > 0
    assert engine.estimate_image(896, 896).seconds > estimate.seconds
    entries = json.loads(speed_file.read_text())["entries"]
    assert list(entries) == [engine.speeds.key]
    assert engine.decoder.length == 0 and engine.decoder.cache is engine.decoder.default_cache

    again = Engine(tiny_fp32, EngineOptions(speed_file=speed_file))  # the next start of the app
    encoded = counting(again, monkeypatch)
    assert again.calibrate() and not encoded
    assert again.estimate_image(448, 448).seconds == estimate.seconds


def test_calibration_leaves_a_conversation_as_it_was(tiny_fp32):
    engine = Engine(tiny_fp32)
    conv = engine.new_conversation()
    list(conv.attach([random_image(200, 200, 1)]))
    length = engine.decoder.length
    assert engine.calibrate()
    assert engine.decoder.length == length and conv.attached


def test_a_stop_request_ends_calibration_between_steps(tiny_fp32, monkeypatch):
    engine = Engine(tiny_fp32)
    encoded = counting(engine, monkeypatch)
    assert not engine.calibrate(should_stop=lambda: True)
    assert len(encoded) <= 2 and not engine.speeds.has_chunks("decoder")
    assert not engine.turn_taking.busy


def test_progress_is_in_seconds_once_calibrated(tiny_fp32):
    engine = Engine(tiny_fp32)
    conv = engine.new_conversation()
    untimed = [e.progress for e in conv.attach([random_image(200, 200, 2)]) if isinstance(e, StatusEvent)]
    assert untimed and all(p.seconds_left_after() is None for p in untimed)
    engine.calibrate()
    conv = engine.new_conversation()
    timed = [e.progress for e in conv.attach([random_image(200, 200, 3)]) if isinstance(e, StatusEvent)]
    assert all(p.timed and p.total_seconds > 0 for p in timed)


def test_waiting_for_the_prompt_graph_stops_when_asked(tiny_fp32, monkeypatch):
    """The optional prompt graph loads in the background for 10-20 s after a start; the app must
    be able to take the engine back during that wait."""
    import threading
    import time

    engine = Engine(tiny_fp32)
    loading = threading.Event()
    loader = threading.Thread(target=loading.wait, args=(30,))
    loader.start()
    monkeypatch.setattr(engine.decoder, "_prefill_loader", loader)
    asked = time.perf_counter()
    try:
        assert not engine.calibrate(should_stop=lambda: time.perf_counter() - asked > 0.3)
        assert time.perf_counter() - asked < 2 and not engine.speeds.has_vision()
    finally:
        loading.set()
        loader.join()
    assert engine.calibrate()  # loaded (here: nothing to load): measured


def test_a_question_from_another_thread_ends_calibration_between_steps(tiny_fp32, monkeypatch):
    """The local server asks through engine.turn_taking.hold(): the first-start measurement makes way."""
    import threading

    engine = Engine(tiny_fp32)
    got_it = threading.Event()

    def server_question():
        if engine.turn_taking.hold(lambda: False):
            got_it.set()
            engine.turn_taking.release()

    asker = threading.Thread(target=server_question)
    original = engine.vision.encode

    def encode_then_a_question_arrives(pixels, grid):
        if not asker.is_alive() and not got_it.is_set():
            asker.start()
            while not engine.turn_taking.others_waiting:  # it is waiting for the engine now
                threading.Event().wait(0.01)
        return original(pixels, grid)

    monkeypatch.setattr(engine.vision, "encode", encode_then_a_question_arrives)
    assert not engine.calibrate()
    asker.join(10)
    assert got_it.is_set() and not engine.speeds.has_chunks("decoder")
