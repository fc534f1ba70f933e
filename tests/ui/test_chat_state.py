"""What a chat is doing, as one value: the steps a running question takes and what they mean."""

from __future__ import annotations

from ui.chat_state import IDLE, Holding, Idle, Running, Sent


def test_a_question_begins_and_is_stopped_for_an_action_in_one_value():
    sent = Running(Sent.QUESTION)
    assert not sent.begun and not sent.answer_begun and sent.then is None
    begun = sent.began()
    assert begun.begun and begun.answer_begun and begun.sent is Sent.QUESTION
    assert begun.began() is begun  # more progress changes nothing
    action = print
    stopping = begun.stopping_for(action)
    assert stopping == Running(Sent.QUESTION, begun=True, then=action)
    assert sent == Running(Sent.QUESTION)  # every step is a new value; the old one is unchanged


def test_a_regenerate_has_an_answer_to_lose_before_it_begins():
    assert Running(Sent.REGENERATE).answer_begun
    assert not Running(Sent.REOPENED_QUESTION).answer_begun


def test_idle_and_holding_are_values_too():
    assert IDLE == Idle() and Holding("Why?") == Holding("Why?") != Holding("How?")
