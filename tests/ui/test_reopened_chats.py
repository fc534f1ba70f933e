"""A reopened saved chat is re-read by the real engine (tiny exported checkpoint) when, and only
when, the user asks a new question in it; Stop during that re-reading sends nothing, and a chat
too long to re-read goes on as a fresh conversation."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from engine.events import Stage
from tests.ui.conftest import add_images, ask_and_wait, engine_turns
from ui.chat_store import TurnRecord
from ui.worker import RESTORING


def _save_and_reopen(qtbot, window, make_image) -> tuple[str, int]:
    """One question with an image, saved; then a new chat, then the saved one reopened from the list.
    Returns (the saved answer, the image's token cost)."""
    add_images(qtbot, window.image_pane, [make_image("a.png", 320, 240)])
    answer, error = ask_and_wait(qtbot, window, "What is in the picture?")
    assert error == ""
    cost = window.session.record.turns[0].stats["image_tokens"]
    assert cost == window.info.image_tokens(320, 240)
    window.session.new_chat()
    window.chats.list.itemClicked.emit(window.chats.list.item(0))
    assert [m.markdown() for m in window.chat.messages()] == ["What is in the picture?", answer]
    return answer, cost


def test_a_reopened_chat_is_re_read_before_the_follow_up(qtbot, open_window, tiny_fp32, make_image, tmp_path):
    window = open_window(tiny_fp32, max_new_tokens=3)
    answer, cost = _save_and_reopen(qtbot, window, make_image)
    assert window.banner.isVisible() and "does not remember" in window.banner.text()
    # The new chat reaches the engine thread in its own time (the reopened chat's images open
    # on theirs, so nothing on this thread waits meanwhile); then nothing is re-read.
    qtbot.waitUntil(lambda: engine_turns(window) == [], timeout=10_000)
    qtbot.wait(200)
    assert engine_turns(window) == []  # browsing an old chat costs nothing

    statuses: list = []
    window.controller.status.connect(statuses.append)
    with qtbot.waitSignal(window.controller.restored, timeout=60_000) as restored:
        follow_up, error = ask_and_wait(qtbot, window, "And the colours?")
    assert error == "" and statuses[0] == RESTORING and Stage.ANSWERING in statuses
    assert restored.args[0].stop_reason == "restored" and restored.args[0].image_tokens == cost

    first, second = engine_turns(window)  # the model now holds the saved turn, image included
    assert (first.text, first.answer, len(first.images)) == ("What is in the picture?", answer, 1)
    assert first.images[0] == window.session.store.image_path(
        window.session.record.id, window.session.record.turns[0].images[0]
    )
    assert second.text == "And the colours?" and second.images == []
    stats = second.stats
    # The new question alone would fill prompt + answer tokens; the earlier turn and its image are there too.
    assert stats.context_used > stats.prompt_tokens + stats.new_tokens + cost
    assert stats.context_used > restored.args[0].context_used
    assert not window.banner.isVisible()  # the notice is gone
    saved = json.loads((tmp_path / "history" / window.session.record.id / "conversation.json").read_text())
    assert [t["text"] for t in saved["turns"]] == ["What is in the picture?", "And the colours?"]
    assert saved["turns"][1]["answer"] == follow_up
    assert window.status_line.label.text() == "Ready"


def test_stop_while_re_reading_sends_nothing(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=3)
    _save_and_reopen(qtbot, window, make_image)

    def stop_on_re_reading(stage: str) -> None:  # runs on the engine thread, inside the re-reading
        if stage == RESTORING:
            window.controller.cancel()

    window.controller.worker.status.connect(stop_on_re_reading, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(window.controller.turnSkipped, timeout=60_000):
        qtbot.keyClicks(window.composer.edit, "Follow-up")
        qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    window.controller.worker.status.disconnect(stop_on_re_reading)
    assert engine_turns(window) == []  # the conversation was left empty, the question not asked
    assert window.composer.text() == "Follow-up"  # back in the box
    assert len(window.chat.messages()) == 2 and len(window.session.record.turns) == 1
    assert window.banner.isVisible() and "not re-read" in window.banner.text()

    window.composer.edit.clear()
    ask_and_wait(qtbot, window, "Follow-up")  # the next send re-reads the chat after all
    assert [t.text for t in engine_turns(window)] == ["What is in the picture?", "Follow-up"]


def test_a_chat_too_long_to_re_read_goes_on_fresh(qtbot, open_window, tiny_fp32):
    window = open_window(tiny_fp32, max_new_tokens=3)
    store = window.session.store
    record = store.new_record()
    record.turns.append(TurnRecord("Tell me everything", [], "and then " * 3000))  # > the 4096 context
    store.save(record)
    window.session.open_saved_chat(record.id)

    with qtbot.waitSignal(window.controller.restoreFailed, timeout=60_000) as failed:
        _, error = ask_and_wait(qtbot, window, "Short question")
    assert error == "" and failed.args[1] is True  # refused as too long
    assert [t.text for t in engine_turns(window)] == ["Short question"]  # a fresh conversation
    assert window.banner.isVisible() and "too long" in window.banner.text()
    assert "does not remember" in window.banner.text()
    assert [t.text for t in store.load(record.id).turns] == ["Tell me everything", "Short question"]
