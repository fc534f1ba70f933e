"""The real main window on the real engine (tiny exported checkpoint): drop, ask, stream, stop,
follow up, regenerate, paste, refuse, reopen, and close in the middle of an answer."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage

from tests.ui.conftest import add_images, ask, ask_and_wait, drop_files, engine_turns
from ui.grounding import box_rect

LONG = 3000  # tokens: far more than the time a test waits, so only Stop can end the answer


def test_drop_ask_stream_then_stop(qtbot, open_window, tiny_fp32, make_image, tmp_path):
    window = open_window(tiny_fp32, max_new_tokens=LONG)
    photo = make_image("photo.png", 640, 480)
    with qtbot.waitSignal(window.image_pane.imagesChanged):
        assert drop_files(window.chat, [photo])  # a drop anywhere in the window attaches
    expected_cost = window.info.image_tokens(640, 480)
    assert window.image_pane.thumbnails.item(0).text().startswith(f"new · {expected_cost} tokens")

    pieces: list[str] = []
    window.controller.textPiece.connect(pieces.append)
    ask(qtbot, window, "What is in the picture?")
    qtbot.waitUntil(lambda: len(pieces) >= 5, timeout=30_000)  # it streams, piece by piece
    assert window.composer.button.text() == "Stop"
    assert window.status_line.label.text() == "Answering…"
    assert window.chat.messages()[0].markdown() == "What is in the picture?"
    assert window.chat.last_answer().markdown().startswith("".join(pieces[:5]))

    with qtbot.waitSignal(window.answerFinished, timeout=30_000) as done:
        qtbot.mouseClick(window.composer.button, Qt.MouseButton.LeftButton)
    answer_text, error = done.args
    assert error == "" and answer_text
    stats = window.session.record.turns[0].stats
    assert stats["stop_reason"] == "cancelled" and 0 < stats["new_tokens"] < LONG
    assert stats["image_tokens"] == expected_cost
    footer = window.chat.last_answer().stats.text()
    assert f"{expected_cost} image tokens" in footer and "stopped" in footer and "tokens/s" in footer
    assert window.chat.last_answer().markdown() == answer_text
    qtbot.mouseClick(window.chat.last_answer().copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == answer_text
    assert window.composer.button.text() == "Send" and window.status_line.label.text() == "Ready"
    # The image went to the engine with this question, as a copy kept with the saved chat.
    (turn,) = engine_turns(window)
    assert len(turn.images) == 1 and turn.images[0].read_bytes() == photo.read_bytes()
    saved = json.loads((tmp_path / "history" / window.session.record.id / "conversation.json").read_text())
    assert saved["turns"][0]["answer"] == answer_text and saved["turns"][0]["images"] == [turn.images[0].name]


def test_follow_up_keeps_the_image_in_context_and_regenerate_replaces_the_answer(
    qtbot, open_window, tiny_fp32, make_image
):
    window = open_window(tiny_fp32, max_new_tokens=6)
    add_images(qtbot, window.image_pane, [make_image("a.png", 500, 300)])
    ask_and_wait(qtbot, window, "Describe it.")
    second, _ = ask_and_wait(qtbot, window, "And the colours?")
    first_turn, second_turn = engine_turns(window)
    assert len(first_turn.images) == 1 and second_turn.images == []  # sent once, kept in context
    assert [i.sent for i in window.image_pane.images()] == [True]
    assert window.session.record.turns[1].stats["image_tokens"] == 0

    assert window.chat.last_answer().regenerate_button.isVisible()
    with qtbot.waitSignal(window.answerFinished, timeout=60_000) as again:
        qtbot.mouseClick(window.chat.last_answer().regenerate_button, Qt.MouseButton.LeftButton)
    assert len(window.chat.messages()) == 4 and len(window.session.record.turns) == 2
    assert window.session.record.turns[1].answer == again.args[0] == window.chat.last_answer().markdown()
    assert len(engine_turns(window)) == 2


def test_pasted_image_is_sent_with_the_question(qtbot, open_window, tiny_fp32):
    window = open_window(tiny_fp32, max_new_tokens=4)
    image = QImage(300, 500, QImage.Format.Format_RGB32)
    image.fill(QColor("orange"))
    QGuiApplication.clipboard().setImage(image)
    window.composer.edit.setFocus()
    with qtbot.waitSignal(window.image_pane.imagesChanged):
        qtbot.keyClick(window.composer.edit, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert window.composer.text() == ""
    ask_and_wait(qtbot, window, "What colour?")
    (turn,) = engine_turns(window)
    assert QImage(str(turn.images[0])).size().toTuple() == (300, 500)


def test_a_non_image_drop_shows_an_error_and_changes_nothing(qtbot, open_window, tiny_fp32, make_image, tmp_path):
    window = open_window(tiny_fp32)
    add_images(qtbot, window.image_pane, [make_image("ok.png")])
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with qtbot.waitSignal(window.image_pane.errorOccurred):
        drop_files(window.image_pane, [notes])
    assert window.banner.isVisible() and "notes.txt" in window.banner.text()
    assert [i.path.name for i in window.image_pane.images()] == ["ok.png"]
    assert window.image_pane.pending() == [window.image_pane.images()[0].path]


def test_grounding_answer_draws_boxes_on_the_question_image(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=2)
    first, wide = make_image("first.png", 400, 400), make_image("wide.png", 900, 300)
    add_images(qtbot, window.image_pane, [first])
    ask_and_wait(qtbot, window, "One")
    add_images(qtbot, window.image_pane, [wide])
    ask_and_wait(qtbot, window, "Two")
    window.image_pane.thumbnails.setCurrentRow(0)
    crafted = 'Found:\n```json\n[{"bbox_2d": [0, 500, 500, 1000], "label": "left half, bottom"}]\n```'
    window.session.draw_boxes_from(crafted)
    shown = window.image_pane.canvas.image
    assert shown.path == wide  # the image of the question the answer belongs to
    assert [b.label for b in shown.boxes] == ["left half, bottom"]
    drawn = window.image_pane.canvas.image_rect()
    assert abs(drawn.width() / drawn.height() - 3.0) < 0.05
    on_screen = box_rect(shown.boxes[0], drawn)
    assert (on_screen.width(), on_screen.height()) == (drawn.width() / 2, drawn.height() / 2)


def test_a_detail_change_needs_no_reload_and_applies_to_the_next_question(qtbot, open_window, tiny_fp32, make_image):
    big = make_image("big.png", 2000, 1500)
    window = open_window(tiny_fp32, max_new_tokens=3)
    add_images(qtbot, window.image_pane, [big])
    standard_cost = window.info.image_tokens(2000, 1500, image_detail="standard")
    high_cost = window.info.image_tokens(2000, 1500, image_detail="high")
    assert high_cost > standard_cost
    ask_and_wait(qtbot, window, "First look")
    assert window.session.record.turns[0].stats["image_tokens"] == standard_cost

    engine = window.test_engines[-1]
    conversation = engine.active_conversation
    loads: list = []
    window.modelLoaded.connect(lambda: loads.append(True))
    new = replace(window.settings, image_detail="high", temperature=0.4, top_p=0.95, top_k=5, max_new_tokens=77)
    window.apply_settings(new)
    qtbot.wait(200)  # a reload, if one had been queued, would have started by now
    assert loads == [] and window.test_engines == [engine]  # no reload
    assert engine.active_conversation is conversation  # and no new chat
    assert [i.tokens for i in window.image_pane.images()] == [standard_cost]  # what it cost when sent

    add_images(qtbot, window.image_pane, [big])  # the same picture again, now at high detail
    assert window.image_pane.thumbnails.item(1).text().startswith(f"new · {high_cost} tokens")
    ask_and_wait(qtbot, window, "Closer look")
    first, second = engine_turns(window)
    assert first.stats.image_tokens == standard_cost and second.stats.image_tokens == high_cost
    assert second.stats.context_used > first.stats.context_used + high_cost  # the chat went on
    assert len(window.chat.messages()) == 4 and len(window.session.record.turns) == 2
    window.close()

    reopened = open_window(tiny_fp32)
    assert reopened.settings == new
    assert reopened.settings.sampling().max_new_tokens == 77
    add_images(qtbot, reopened.image_pane, [big])
    assert reopened.image_pane.thumbnails.item(0).text().startswith(f"new · {high_cost} tokens")


def test_a_threads_change_reloads_the_model_and_starts_a_new_chat(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32)
    add_images(qtbot, window.image_pane, [make_image("a.png")])
    engine = window.test_engines[-1]
    with qtbot.waitSignal(window.modelLoaded, timeout=60_000):
        window.apply_settings(replace(window.settings, threads=1, model_dir=str(tiny_fp32)))
    assert len(window.test_engines) == 2 and window.test_engines[-1] is not engine
    assert window.image_pane.images() == []


def test_reopen_a_saved_chat(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=3)
    add_images(qtbot, window.image_pane, [make_image("a.png", 320, 240)])
    answer, _ = ask_and_wait(qtbot, window, "Saved question")
    saved_id = window.session.record.id
    window.session.new_chat()
    assert window.chat.messages() == [] and window.image_pane.images() == []
    item = window.chats.list.item(0)
    assert item.text() == "Saved question"
    window.chats.list.itemClicked.emit(item)
    assert window.session.record.id == saved_id
    assert [m.markdown() for m in window.chat.messages()] == ["Saved question", answer]
    qtbot.waitUntil(lambda: not window.image_pane.opening(include_sent=True))
    assert [i.sent for i in window.image_pane.images()] == [True]
    assert window.banner.isVisible() and "does not remember" in window.banner.text()


def test_stop_also_drops_questions_still_waiting_in_the_queue(qtbot, open_window, tiny_fp32):
    window = open_window(tiny_fp32, max_new_tokens=LONG)
    controller = window.controller
    sampling = window.settings.sampling()
    with qtbot.waitSignal(controller.textPiece, timeout=30_000):
        controller.ask("first", [], sampling)
    with qtbot.waitSignal(controller.turnSkipped, timeout=30_000):
        with qtbot.waitSignal(controller.turnFinished, timeout=30_000) as first:
            controller.ask("second", [], sampling)  # queued behind the running first answer
            controller.cancel()
    assert first.args[0].stop_reason == "cancelled"
    assert [t.text for t in engine_turns(window)] == ["first"]


def test_a_bad_model_folder_is_reported(qtbot, open_window, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    window = open_window(empty, wait_loaded=False)
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert "not-a-model" in window.banner.text() or "manifest" in window.banner.text()
    assert not window.composer.button.isEnabled()
    assert window.model_label.text() == "no model"


def test_closing_in_the_middle_of_an_answer_stops_and_joins_the_thread(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=LONG)
    add_images(qtbot, window.image_pane, [make_image("a.png")])
    with qtbot.waitSignal(window.controller.textPiece, timeout=30_000):
        ask(qtbot, window, "Talk for a long time")
    thread = window.controller.worker.thread()
    started = time.perf_counter()
    window.close()
    assert time.perf_counter() - started < 5
    assert thread.isFinished() and not thread.isRunning()
    assert window.controller.worker.engine is None  # released once the thread had ended
    (saved,) = window.session.store.list()  # the part of the answer that had arrived is kept
    turn = window.session.store.load(saved.id).turns[0]
    assert turn.answer and "closed during this answer" in turn.error


def test_a_question_the_engine_refuses_is_given_back(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32)
    photo = make_image("photo.png")
    add_images(qtbot, window.image_pane, [photo])
    photo.write_bytes(b"no longer a picture")  # changed on disk after it was attached
    with qtbot.waitSignal(window.session.error, timeout=30_000) as refused:
        ask(qtbot, window, "What is it?")
    assert refused.args[0].startswith("The question was not sent:") and "photo" in refused.args[0]
    assert window.composer.text() == "What is it?"  # back in the box to try again
    assert window.image_pane.pending() == [photo]
    assert window.chat.messages() == [] and window.session.record.turns == []
    assert window.composer.button.text() == "Send" and window.banner.isVisible()


def test_new_chat_during_an_answer_stops_it_first(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=LONG)
    add_images(qtbot, window.image_pane, [make_image("a.png")])
    with qtbot.waitSignal(window.controller.textPiece, timeout=30_000):
        ask(qtbot, window, "Go on and on")
    with qtbot.waitSignal(window.answerFinished, timeout=30_000) as stopped:
        qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert stopped.args[0]  # the stopped answer was kept in the saved chat
    qtbot.waitUntil(lambda: window.chat.messages() == [], timeout=10_000)
    assert window.image_pane.images() == [] and not window.session.busy
    qtbot.waitUntil(lambda: engine_turns(window) == [], timeout=10_000)  # a fresh engine conversation
    assert window.session.store.list()[0].turn_count == 1


def test_a_model_that_loses_accuracy_on_this_processor_says_so(qtbot, open_window, tiny_int4, tmp_path, monkeypatch):
    """A model converted before int8 weights were limited to 7 bits, on an AVX2-only CPU."""
    import json
    import shutil

    from engine import engine as engine_module
    from engine.cpu import CpuInfo

    old = tmp_path / "old-model"
    shutil.copytree(tiny_int4, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["weights"]["int8_weight_max"] = 127
    (old / "manifest.json").write_text(json.dumps(manifest))
    zen1 = CpuInfo("AMD", "AMD EPYC 7551", "x86_64", frozenset({"avx2", "fma", "f16c"}), 2, 4)
    monkeypatch.setattr(engine_module, "cpu_info", lambda: zen1)
    window = open_window(old)
    assert window.banner.isVisible() and "Convert the model again" in window.banner.text()
    assert window.composer.button.isEnabled()  # it still answers


def test_stop_while_the_engine_is_busy_elsewhere_gives_the_question_back(qtbot, open_window, tiny_fp32):
    """The local server holds the engine; the chat's question waits, then the user stops it: the
    model never saw it, so it goes back to the box instead of staying as an empty turn."""
    window = open_window(tiny_fp32)
    engines = window.test_engines
    ask_and_wait(qtbot, window, "first")
    assert engines[-1].turn_taking.hold(lambda: False)  # as a server answer in progress would
    try:
        ask(qtbot, window, "second")
        qtbot.waitUntil(
            lambda: window.status_line.label.text().startswith("Waiting for the local server"), timeout=30_000
        )
        with qtbot.waitSignal(window.controller.turnSkipped, timeout=30_000):
            window.controller.cancel()
    finally:
        engines[-1].turn_taking.release()
    qtbot.waitUntil(lambda: window.composer.button.text() == "Send", timeout=30_000)
    assert window.composer.text() == "second"
    assert [t.text for t in window.session.record.turns] == ["first"]
    assert len(window.chat.messages()) == 2


def test_an_answer_that_fails_mid_way_is_taken_back_like_the_model_forgets_it(
    qtbot, open_window, tiny_fp32, monkeypatch
):
    from engine import conversation as conversation_module
    from engine.errors import EngineError

    window = open_window(tiny_fp32, max_new_tokens=16)  # the failure comes at the 3rd token
    ask_and_wait(qtbot, window, "first")
    real_next, calls = conversation_module.Sampler.next_token, []

    def failing_next(self, logits, generated):
        calls.append(1)
        if len(calls) == 3:
            raise EngineError("The model produced invalid numbers")
        return real_next(self, logits, generated)

    monkeypatch.setattr(conversation_module.Sampler, "next_token", failing_next)
    with qtbot.waitSignal(window.session.error, timeout=30_000) as failed:
        ask(qtbot, window, "second")
    assert "does not remember the question" in failed.args[0] and "invalid numbers" in failed.args[0]
    assert window.composer.text() == "second"
    assert [t.text for t in window.session.record.turns] == ["first"] and len(window.chat.messages()) == 2
