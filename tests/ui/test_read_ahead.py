"""The pending images are read while the question is typed: the states of the window around a
read-ahead, on a scripted engine whose read steps wait for the test (tests/ui/scripted_engine.py)."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QImage

from engine.errors import ContextFullError
from tests.ui.conftest import add_images, ask, drop_files
from tests.ui.scripted_engine import Script, ScriptedEngine
from ui.chat_store import TurnRecord

WAIT = 10_000


@pytest.fixture
def scripted(qtbot, tmp_path, settings_file):
    """scripted(script=None) -> (window, script): the real window on a ScriptedEngine."""
    from ui.app import build_main_window

    def open_(script: Script | None = None):
        script = script or Script()
        (tmp_path / "attachments").mkdir(exist_ok=True)
        window = build_main_window(
            tmp_path / "scripted-model",
            engine_factory=lambda setup: ScriptedEngine(script),
            settings_store=QSettings(str(settings_file), QSettings.Format.IniFormat),
            history_root=tmp_path / "history",
            attachments_dir=lambda: tmp_path / "attachments",
            speed_file=tmp_path / "speeds.json",
        )
        qtbot.addWidget(window)
        with qtbot.waitSignal(window.modelLoaded, timeout=WAIT):
            window.show()
        return window, script

    return open_


def prepares(script: Script) -> list[tuple]:
    return [call for call in list(script.calls) if call[0] == "prepare"]


def test_a_dropped_image_is_read_while_the_question_is_typed(qtbot, scripted, make_image):
    window, script = scripted()
    assert window.image_pane.images() == [] and prepares(script) == []  # nothing to read yet
    drop_files(window.chat, [make_image("photo.png")])
    qtbot.waitUntil(lambda: window.status_line.label.text().startswith("Reading the image… 0 %"), timeout=WAIT)
    assert prepares(script) == [("prepare", ["photo.png"], "standard")]
    assert window.image_pane.thumbnails.item(0).text() == "new · 100 tokens\nabout 8 s"

    qtbot.keyClicks(window.composer.edit, "What colour")  # typing is never blocked
    assert window.composer.text() == "What colour"
    assert window.composer.button.text() == "Send" and window.composer.button.isEnabled()

    # One step of 10 predicted seconds: between events, the display moves on by the time elapsed
    # (at least the 0.8 s waited, at most the time since the step was shown: a busy CI runner lags).
    start, shown_at = window.status_line.bar.value(), time.monotonic()
    qtbot.wait(800)
    assert window.status_line.bar.value() > start and window.status_line.bar.maximum() > 0
    since_shown = time.monotonic() - shown_at + 0.3  # + the time between "0 %" and shown_at
    text = window.status_line.label.text()
    moved = re.fullmatch(r"Reading the image… (\d+) % · about (\d+) s left", text)
    assert moved, text
    percent, left = int(moved[1]), int(moved[2])
    assert 1 <= percent <= since_shown * 10, text  # 10 s is 100 %: one percent per 0.1 s
    assert round(10 - since_shown) <= left <= 10 - 0.8 + 0.5, text

    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT) as ended:
        script.step()
    assert ended.args[0].images == 1 and not ended.args[0].cancelled
    assert window.status_line.label.text() == "Ready · the image is read: the answer starts as soon as you send"
    assert not window.status_line.bar.isVisible()
    assert window.image_pane.thumbnails.item(0).text().endswith("\nready")  # and the thumbnail says so


def test_send_during_the_read_lets_it_finish_and_the_answer_follows(qtbot, scripted, make_image):
    window, script = scripted()
    drop_files(window.chat, [make_image("photo.png")])
    qtbot.waitUntil(lambda: window.status_line.label.text().startswith("Reading the image"), timeout=WAIT)
    finished = []
    window.controller.turnFinished.connect(finished.append)
    ask(qtbot, window, "What colour?")
    qtbot.wait(300)
    assert script.kinds()[-1] == "prepare"  # the question waits behind the read...
    assert window.status_line.label.text().startswith("Reading the image")  # ...which goes on showing
    assert window.chat.last_answer().body.document().toPlainText() == "Reading the image…"
    assert window.composer.button.text() == "Stop"

    with qtbot.waitSignal(window.answerFinished, timeout=WAIT) as done:
        script.step()
    assert done.args == ["It is blue.", ""]
    assert [r.cancelled for r in script.results] == [False]  # Send did not stop the read
    assert script.kinds()[-2:] == ["prepare", "ask"]
    (stats,) = finished
    assert stats.ahead_tokens == 100  # the question used what was read (its image is a stored copy)
    assert window.image_pane.pending() == [] and prepares(script) == [("prepare", ["photo.png"], "standard")]


def test_removing_a_pending_image_reads_the_remaining_ones(qtbot, scripted, make_image):
    window, script = scripted()
    first, second = make_image("a.png"), make_image("b.png", 320, 200)
    drop_files(window.chat, [first])
    qtbot.waitUntil(lambda: len(script.results) == 0 and len(prepares(script)) == 1, timeout=WAIT)
    drop_files(window.chat, [second])  # the new list starts with the image being read: no stop
    script.step()
    qtbot.waitUntil(lambda: len(prepares(script)) == 2, timeout=WAIT)
    assert [r.cancelled for r in script.results] == [False]
    assert prepares(script)[1] == ("prepare", ["a.png", "b.png"], "standard")

    window.image_pane.thumbnails.setCurrentRow(0)  # a.png, while b.png is being read
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        qtbot.mouseClick(window.image_pane.remove_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: len(prepares(script)) == 3, timeout=WAIT)
        script.step()
    assert prepares(script)[2] == ("prepare", ["b.png"], "standard")
    assert [r.cancelled for r in script.results] == [False, True, False]  # [a, b] was stopped for [b]
    assert window.image_pane.pending() == [second]

    window.image_pane.thumbnails.setCurrentRow(0)
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        window.image_pane.remove_current()
    assert prepares(script)[-1] == ("prepare", [], "standard")  # nothing pending: rolled back


def test_stop_stops_the_read_and_the_question_waiting_behind_it(qtbot, scripted, make_image):
    window, script = scripted()
    photo, second = make_image("photo.png"), make_image("second.png", 200, 300)
    drop_files(window.chat, [photo])
    qtbot.waitUntil(lambda: window.status_line.label.text().startswith("Reading the image"), timeout=WAIT)
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT) as ended:
        qtbot.keyClick(window, Qt.Key.Key_Escape)  # Chat › Stop, with no answer running
    assert ended.args[0].cancelled and window.status_line.label.text() == "Ready"
    assert window.image_pane.pending() == [photo]  # nothing lost: it is read at send

    drop_files(window.chat, [second])
    qtbot.waitUntil(lambda: window.status_line.label.text().startswith("Reading the images"), timeout=WAIT)
    ask(qtbot, window, "What colour?")
    with qtbot.waitSignal(window.controller.turnSkipped, timeout=WAIT):
        qtbot.mouseClick(window.composer.button, Qt.MouseButton.LeftButton)  # Stop
    qtbot.waitUntil(lambda: window.composer.button.text() == "Send", timeout=WAIT)
    assert [r.cancelled for r in script.results] == [True, True] and "ask" not in script.kinds()
    assert window.composer.text() == "What colour?" and window.image_pane.pending() == [photo, second]
    assert window.session.record.turns == [] and window.chat.messages() == []


def test_a_failed_read_ahead_is_shown_once_and_the_question_still_goes(qtbot, scripted, make_image):
    message = "This conversation is full: the image needs 100 more tokens but only 12 of 4096 are left."
    window, script = scripted(Script(prepare_error=ContextFullError(message)))
    errors, session_errors = [], []
    window.session.read_ahead.error.connect(errors.append)
    window.session.error.connect(session_errors.append)
    photo = make_image("photo.png")
    drop_files(window.chat, [photo])
    qtbot.waitUntil(window.banner.isVisible, timeout=WAIT)
    qtbot.wait(200)
    assert errors == [message] and session_errors == []  # one line, said once
    assert window.banner.text() == message and window.banner.property("kind") == "error"
    assert window.image_pane.pending() == [photo] and window.status_line.label.text() == "Ready"

    window.apply_settings(replace(window.settings, image_detail="high"))  # read again: it fails again
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=WAIT)
    assert window.banner.isVisible() and window.banner.text() == message

    script.prepare_error = None  # the question reads the image at send
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT) as done:
        ask(qtbot, window, "What colour?")
    assert done.args == ["It is blue.", ""] and session_errors == []
    assert script.calls[-1] == ("ask", "What colour?", [window.session.record.turns[0].images[0]])


def test_a_read_ahead_that_fails_after_send_leaves_it_to_the_question(qtbot, scripted, make_image):
    from engine.errors import ImageError

    window, script = scripted(Script(prepare_error=ImageError("photo.png changed on disk"), fail_after_step=True))
    drop_files(window.chat, [make_image("photo.png")])
    qtbot.waitUntil(lambda: window.status_line.label.text().startswith("Reading the image"), timeout=WAIT)
    ask(qtbot, window, "What colour?")
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT) as done:
        script.step()  # the read fails; the question reads the image itself (here it works)
    assert done.args == ["It is blue.", ""] and script.kinds()[-2:] == ["prepare", "ask"]
    assert not window.banner.isVisible()  # the failed read-ahead was the question's business


def test_new_chat_and_a_detail_change(qtbot, scripted, make_image):
    window, script = scripted()
    script.open_gate = True
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        window.image_pane.add_files([make_image("photo.png")])
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        window.apply_settings(replace(window.settings, image_detail="high"))
    assert prepares(script)[-1] == ("prepare", ["photo.png"], "high")
    assert window.image_pane.thumbnails.item(0).text() == "new · 400 tokens\nready"  # read again, at high detail
    assert window.image_pane.images()[0].seconds == 8.0

    count = len(script.calls)
    window.session.new_chat()
    qtbot.waitUntil(lambda: script.kinds()[-1] == "new_conversation", timeout=WAIT)
    qtbot.wait(200)
    assert script.kinds()[count:] == ["new_conversation"]  # a fresh conversation holds nothing: no roll-back needed


def test_a_reopened_chat_is_re_read_before_the_dropped_image(qtbot, scripted, make_image):
    window, script = scripted()
    script.open_gate = True
    store = window.session.store
    record = store.new_record()
    record.turns.append(TurnRecord("Earlier question", [], "Earlier answer"))
    store.save(record)
    window.session.open_saved_chat(record.id)
    assert window.banner.isVisible() and "does not remember" in window.banner.text()

    with qtbot.waitSignal(window.controller.restored, timeout=WAIT):
        with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
            window.image_pane.add_files([make_image("photo.png")])
    assert script.kinds()[-2:] == ["restore", "prepare"]
    assert not window.banner.isVisible()  # the session knows the chat was re-read
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        ask(qtbot, window, "And now?")
    assert script.kinds()[-3:] == ["restore", "prepare", "ask"]  # not re-read a second time
    assert [t.text for t in store.load(record.id).turns] == ["Earlier question", "And now?"]


def test_the_speed_is_measured_while_idle_and_any_request_comes_first(qtbot, scripted, make_image):
    window, script = scripted(Script(calibration_steps=200, open_gate=True))  # 4 s unless stopped
    qtbot.waitUntil(window.measure_label.isVisible, timeout=WAIT)  # after the load, nothing waiting
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        window.image_pane.add_files([make_image("photo.png")])
    assert script.calibrations[0] is False  # stopped by the read-ahead
    qtbot.waitUntil(lambda: script.calibrations[-1] is True, timeout=WAIT)  # went on once idle again
    qtbot.waitUntil(lambda: not window.measure_label.isVisible(), timeout=WAIT)
    add_images(qtbot, window.image_pane, [make_image("second.png", 200, 100)])
    qtbot.waitUntil(lambda: len(prepares(script)) == 2, timeout=WAIT)
    qtbot.wait(200)
    assert script.calibrations == [False, True]  # measured once, not again


def test_a_question_never_waits_behind_the_prompt_graph_loading(qtbot, scripted):
    """A model with the optional prompt graph loads it in the background after a start; the
    measurement needs it, and must not hold the engine thread while it loads."""
    import threading

    script = Script(open_gate=True, prompt_graph=threading.Event())
    window, script = scripted(script)
    qtbot.waitUntil(window.measure_label.isVisible, timeout=WAIT)
    with qtbot.waitSignal(window.answerFinished, timeout=2_000) as done:
        ask(qtbot, window, "Hi")
    assert done.args[0] == "It is blue." and True not in script.calibrations  # stopped for the question
    script.prompt_graph.set()  # loaded: measured now (nothing waits)
    qtbot.waitUntil(lambda: script.calibrations[-1:] == [True], timeout=WAIT)


def test_predictions_follow_the_refined_speeds(qtbot, scripted, make_image):
    window, script = scripted(Script(seconds=None))
    script.open_gate = True
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        ask(qtbot, window, "Hi")
    script.open_gate = False
    add_images(qtbot, window.image_pane, [make_image("a.png")])
    qtbot.waitUntil(lambda: len(prepares(script)) == 1, timeout=WAIT)
    assert window.image_pane.thumbnails.item(0).text() == "new · 100 tokens"  # not measured yet
    assert script.contexts[-1] == 12  # read after what the conversation holds (reading slows as it grows)
    script.seconds = 30.0  # the read refines the speeds
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        script.step()
    assert window.image_pane.images()[0].seconds == 30.0
    assert window.image_pane.thumbnails.item(0).text() == "new · 100 tokens\nready"  # read: no wait left
    script.seconds = 20.0  # and so does an answer
    script.open_gate = False
    window.session.regenerate()
    # Answering again drops what was read ahead (it came after the answer): no longer ready...
    assert window.image_pane.thumbnails.item(0).text() == "new · 100 tokens\nabout 30 s"
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        script.step()
    assert window.image_pane.images()[0].seconds == 20.0
    # ...and it is read again.
    script.open_gate = True
    qtbot.waitUntil(lambda: len(prepares(script)) == 2, timeout=WAIT)
    assert script.kinds()[-2:] == ["ask", "prepare"] and script.calls[-2][1] == "again"
    window.session.new_chat()
    add_images(qtbot, window.image_pane, [make_image("b.png")])
    assert script.contexts[-1] == 0  # a new chat holds nothing


def test_the_status_line_moves_within_a_step_but_never_past_it():
    from engine.events import Progress
    from ui.status_line import describe

    progress = Progress(done_seconds=10.0, total_seconds=40.0, step_seconds=10.0)
    assert describe("Reading the image", progress, 0.0) == ("Reading the image… 25 % · about 30 s left", 0.25)
    assert describe("Reading the image", progress, 5.0) == ("Reading the image… 37 % · about 25 s left", 0.375)
    assert describe("Reading the image", progress, 60.0)[1] == 0.5  # a slow step waits for the engine
    untimed = Progress(60.0, 240.0, 60.0, timed=False)  # tokens, before this computer is measured
    assert describe("Reading the image", untimed, 5.0) == ("Reading the image… 25 %", 0.25)
    assert describe("Reading the prompt", Progress(9.6, 10.0, 0.0), 3.0)[0].endswith("under a second left")


def test_the_ledger_stops_only_a_read_that_the_new_images_do_not_extend():
    from ui.requests import PREPARE, QUESTION, RequestLedger, Running

    class Conversation:
        cancels = 0

        def cancel(self):
            self.cancels += 1

    ledger, conversation = RequestLedger(), Conversation()
    ledger.made(PREPARE, 1, ["a"])
    assert ledger.wanted.is_set() and ledger.start(Running(conversation, 1, ("a",)))
    ledger.made(PREPARE, 2, ["a", "b"])  # adds to it: it goes on
    assert conversation.cancels == 0 and not ledger.skip_prepare(2)
    ledger.made(PREPARE, 3, ["b"])  # removes "a": stopped, and the queued [a, b] need not start
    assert conversation.cancels == 1 and ledger.skip_prepare(2)
    assert not ledger.finished() and not ledger.finished()  # two requests still outstanding
    assert ledger.finished() and not ledger.wanted.is_set()  # idle again
    ledger.end()

    ledger.made(PREPARE, 4, ["c"])
    ledger.start(Running(conversation, 4, ("c",)))
    ledger.made(QUESTION, 5)  # a question after it uses the read: a later change does not stop it
    ledger.made(PREPARE, 6, [])
    assert conversation.cancels == 1 and not ledger.should_stop(Running(conversation, 4, ("c",)))
    ledger.cancel(6)  # Stop: everything up to the newest request
    assert conversation.cancels == 2 and ledger.skip_prepare(6) and ledger.cancelled(5)


def test_a_question_sent_while_its_image_opens_waits_for_it(qtbot, scripted, make_image, held_loader):
    window, script = scripted(Script(open_gate=True))
    window.image_pane.add_files([make_image("photo.png")])
    ask(qtbot, window, "What is it?")  # before the image is accepted
    assert window.status_line.label.text() == "Opening the image…" and window.composer.button.text() == "Stop"
    assert "ask" not in script.kinds()
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        held_loader.release.set()
    (asked,) = [call for call in script.calls if call[0] == "ask"]
    assert asked[1] == "What is it?" and len(asked[2]) == 1  # it went with its image
    assert window.image_pane.pending() == [] and window.composer.button.text() == "Send"


def test_a_question_sent_with_a_file_that_is_refused_comes_back_to_the_box(qtbot, scripted, tmp_path, held_loader):
    window, script = scripted(Script(open_gate=True))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    window.image_pane.add_files([notes])
    ask(qtbot, window, "What is it?")
    assert window.composer.text() == ""
    with qtbot.waitSignal(window.image_pane.errorOccurred, timeout=WAIT):
        held_loader.release.set()
    assert window.composer.text() == "What is it?" and window.composer.button.text() == "Send"
    assert window.banner.isVisible() and "notes.txt" in window.banner.text()
    assert "ask" not in script.kinds() and window.status_line.label.text() == "Ready"


def _saved_chat_with_an_image(window, image) -> str:
    """A saved chat whose one question had `image`; returns its id."""
    store = window.session.store
    record = store.new_record()
    record.turns.append(TurnRecord("Earlier question", [store.add_image(record, image)], "Earlier answer"))
    store.save(record)
    return record.id


def test_a_question_in_a_reopened_chat_does_not_wait_for_the_chats_images(qtbot, scripted, make_image, held_loader):
    window, script = scripted(Script(open_gate=True))
    window.session.open_saved_chat(_saved_chat_with_an_image(window, make_image("old.png")))
    assert window.image_pane.opening(include_sent=True)  # the saved image is still being opened
    with qtbot.waitSignal(window.answerFinished, timeout=3_000):  # well before the loader lets go
        ask(qtbot, window, "And now?")
    (asked,) = [call for call in script.calls if call[0] == "ask"]
    assert asked[1:] == ("And now?", [])
    held_loader.release.set()


def test_a_saved_image_refused_on_reopening_does_not_take_back_the_question(
    qtbot, scripted, make_image, tmp_path, held_loader
):
    window, script = scripted(Script(open_gate=True))
    record_id = _saved_chat_with_an_image(window, make_image("old.png"))
    (saved,) = (tmp_path / "history" / record_id / "images").iterdir()
    saved.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # the saved copy is damaged since
    told = []
    window.image_pane.errorOccurred.connect(told.append)
    window.session.open_saved_chat(record_id)
    window.image_pane.add_files([make_image("new.png")])
    ask(qtbot, window, "And this one?")  # waits for new.png, not for the saved image
    assert window.session.holding and window.composer.text() == ""
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        held_loader.release.set()
    assert len(told) == 1 and saved.name in told[0]  # the refusal is told
    (asked,) = [call for call in script.calls if call[0] == "ask"]
    assert asked[1:] == ("And this one?", [asked[2][0]]) and len(asked[2]) == 1  # with its own image
    assert window.composer.text() == ""


def test_a_question_held_at_close_goes_back_to_the_box_and_is_never_sent(qtbot, scripted, make_image, held_loader):
    import time

    window, script = scripted(Script(open_gate=True))
    window.image_pane.add_files([make_image("photo.png")])
    ask(qtbot, window, "What is it?")
    held_loader.release.set()
    assert held_loader.returned.wait(5)
    time.sleep(0.3)  # the opened image is on its way to the GUI thread, which has not handled it
    window.close()
    qtbot.wait(200)
    assert window.composer.text() == "What is it?" and window.chat.messages() == []
    assert "ask" not in script.kinds()


def test_the_status_says_a_held_question_waits_even_when_a_read_ahead_ends(qtbot, scripted, make_image, held_loader):
    window, script = scripted()
    held_loader.release.set()
    add_images(qtbot, window.image_pane, [make_image("first.png")])
    qtbot.waitUntil(lambda: window.session.read_ahead.reading, timeout=WAIT)
    held_loader.release.clear()
    window.image_pane.add_files([make_image("second.png")])  # held
    ask(qtbot, window, "Both?")
    assert window.status_line.label.text() == "Opening the image…"
    # The read's progress can reach the window after the question was held (queued from the engine
    # thread); shown then, it would stay after the read ends.
    window.session.read_ahead.progress.emit("Reading the image", None)
    assert window.status_line.label.text() == "Opening the image…"
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT):
        script.step()  # first.png is read while second.png is still being opened
    assert window.status_line.label.text() == "Opening the image…"
    script.open_gate = True
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        held_loader.release.set()
    (asked,) = [call for call in script.calls if call[0] == "ask"]
    assert len(asked[2]) == 2


def test_a_questions_thumbnails_in_the_conversation_are_the_panes(qtbot, scripted, make_image, monkeypatch):
    import ui.chat_view

    made = []
    monkeypatch.setattr(ui.chat_view, "thumbnail_image", lambda path: made.append(path) or QImage())
    window, script = scripted(Script(open_gate=True))
    add_images(qtbot, window.image_pane, [make_image("wide.png", 800, 200)])
    thumbnail = window.image_pane.images()[0].thumbnail
    with qtbot.waitSignal(window.answerFinished, timeout=WAIT):
        ask(qtbot, window, "What is it?")
    (label,) = window.chat.messages()[0].thumbnails
    assert label.pixmap().size().toTuple() == (64, 16) and label.pixmap().toImage() == thumbnail.toImage()
    assert made == []  # not decoded a second time
