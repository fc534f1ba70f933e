"""A Conversation is built from the model's parts alone, and those parts are what rule it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

from engine.conversation import Conversation
from engine.engine import Engine
from engine.errors import ContextFullError
from tests.engine.test_conversation import GREEDY, run_turn
from tests.reference import random_image

IMAGE = random_image(300, 200, 1)


@pytest.fixture(scope="module")
def engine(tiny_fp32):
    return Engine(tiny_fp32)


def test_the_parts_default_sampling_is_what_a_question_without_options_uses(engine):
    expected = run_turn(engine.new_conversation(), "Describe this image.", [IMAGE])[-1].token_ids
    conv = Conversation(replace(engine.parts, sampling=GREEDY))
    events = list(conv.ask("Describe this image.", [IMAGE]))
    assert events[-1].token_ids == expected


def test_the_parts_context_limit_is_the_conversations(engine):
    question = run_turn(engine.new_conversation(), "Describe this image.", [IMAGE])[-1].prompt_tokens
    conv = Conversation(replace(engine.parts, context_limit=question + 1))
    with pytest.raises(ContextFullError):
        list(conv.ask("Describe this image.", [IMAGE], sampling=GREEDY))
    assert conv.context_used == 0 and conv.turns == []


def test_the_parts_cannot_be_changed_under_a_conversation(engine):
    """Neither through the parts nor through the engine's names for them: a setting changed on
    the engine alone would be one the running conversation never sees, so it is refused."""
    with pytest.raises(FrozenInstanceError):
        engine.parts.context_limit = 10
    for name in ("eos_ids", "decoder", "prompts", "context_limit", "speeds"):
        with pytest.raises(AttributeError):
            setattr(engine, name, None)


def test_the_parts_end_tokens_are_what_end_an_answer(engine):
    """What the benchmark relies on: with no end tokens an answer runs to its length limit."""
    sampling = replace(GREEDY, max_new_tokens=6)
    tokens = run_turn(engine.new_conversation(), "Hi", sampling=sampling)[-1].token_ids
    first = Conversation(replace(engine.parts, eos_ids=frozenset(tokens[:1])))
    stopped = list(first.ask("Hi", sampling=sampling))[-1]
    assert stopped.new_tokens == 1 and stopped.stop_reason == "eos"
    never = Conversation(replace(engine.parts, eos_ids=frozenset()))
    assert list(never.ask("Hi", sampling=sampling))[-1].new_tokens == 6


def test_a_conversation_takes_turns_on_the_parts_turn_taking(engine):
    conv = engine.new_conversation()
    assert engine.parts.turn_taking is engine.turn_taking
    assert engine.turn_taking.try_take()  # as the local server answering would
    try:
        waiting = conv.ask("Hi", sampling=GREEDY)
        assert next(waiting).stage.name == "WAITING"
        conv.cancel()
        assert next(waiting).stop_reason == "cancelled"
    finally:
        engine.turn_taking.release()
    assert not engine.turn_taking.busy
