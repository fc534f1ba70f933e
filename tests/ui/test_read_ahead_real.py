"""Reading ahead on the real engine (tiny exported checkpoint): an image dropped before the
question is read while it is typed, and the answer is the one asking all at once gives."""

from __future__ import annotations

from tests.ui.conftest import ask_and_wait, drop_files, engine_turns
from ui.chat_store import TurnRecord

WAIT = 60_000


def test_an_image_read_ahead_gives_the_same_answer(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, temperature=0.0, max_new_tokens=8)  # greedy: one answer to compare
    greedy = window.settings.sampling()
    assert greedy.greedy
    photo = make_image("photo.png", 320, 240)
    with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT) as ended:
        assert drop_files(window.chat, [photo])
    read = ended.args[0]
    assert read.images == 1 and not read.cancelled
    assert read.ahead_tokens > window.info.image_tokens(320, 240)  # the image and the turn up to the text
    finished = []
    window.controller.turnFinished.connect(finished.append)
    answer, error = ask_and_wait(qtbot, window, "What is in the picture?")
    assert error == "" and answer
    (ahead,) = finished
    assert ahead.ahead_tokens == read.ahead_tokens and ahead.vision_seconds == 0.0  # encoded while typing
    assert ahead.prompt_tokens - ahead.ahead_tokens < 20  # only the question's own text was left

    window.session.new_chat()
    with qtbot.waitSignal(window.controller.turnFinished, timeout=WAIT) as plain:
        window.controller.ask("What is in the picture?", [photo], greedy, "standard")  # no read-ahead
    at_once = plain.args[0]
    assert at_once.ahead_tokens == 0 and at_once.vision_seconds > 0
    assert at_once.token_ids == ahead.token_ids and at_once.prompt_tokens == ahead.prompt_tokens


def test_a_reopened_chat_is_re_read_before_the_image_is(qtbot, open_window, tiny_fp32, make_image):
    window = open_window(tiny_fp32, max_new_tokens=3)
    store = window.session.store
    record = store.new_record()
    record.turns.append(TurnRecord("Earlier question", [], "Earlier answer"))
    store.save(record)
    window.session.open_saved_chat(record.id)
    with qtbot.waitSignal(window.controller.restored, timeout=WAIT):
        with qtbot.waitSignal(window.session.read_ahead.ended, timeout=WAIT) as ended:
            window.image_pane.add_files([make_image("photo.png", 320, 240)])
    assert ended.args[0].images == 1 and not window.banner.isVisible()
    finished = []
    window.controller.turnFinished.connect(finished.append)
    _, error = ask_and_wait(qtbot, window, "And this one?")
    assert error == "" and finished[0].ahead_tokens == ended.args[0].ahead_tokens
    earlier, new = engine_turns(window)
    assert (earlier.text, earlier.answer) == ("Earlier question", "Earlier answer")
    assert new.text == "And this one?" and len(new.images) == 1
