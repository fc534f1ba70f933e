"""One generation at a time: a turn is taken, waited for, given up on, and made way for."""

from __future__ import annotations

import threading

from engine.turn_taking import TurnTaking


def test_a_taken_turn_cannot_be_taken_again_until_released():
    turns = TurnTaking()
    assert turns.try_take() and turns.busy
    assert not turns.try_take()
    turns.release()
    assert not turns.busy and turns.try_take()


def test_hold_gives_up_when_told_to_and_leaves_the_turn_as_it_was():
    turns = TurnTaking()
    turns.try_take()
    assert not turns.hold(lambda: True, poll=0.01)
    assert turns.busy and not turns.others_waiting


def test_a_waiting_caller_is_seen_and_gets_the_turn_once_released():
    turns = TurnTaking()
    turns.try_take()
    got = threading.Event()
    waiter = threading.Thread(target=lambda: turns.hold(lambda: False, poll=0.01) and got.set())
    waiter.start()
    while not turns.others_waiting:
        threading.Event().wait(0.01)
    assert not got.is_set()
    turns.release()
    waiter.join(5)
    assert got.is_set() and turns.busy and not turns.others_waiting
