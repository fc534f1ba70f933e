"""Images read before their question (attach / prepare): the answer is the one transformers gives
for asking everything at once, and the question then reads only its own tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.conversation import Conversation
from engine.engine import Engine
from engine.events import ReadAhead, Stage, StatusEvent, TurnStats
from tests.engine.test_conversation import GREEDY, History, reference_generate, run_turn
from tests.reference import random_image

A, B, C = (random_image(300, 200, 11), random_image(160, 240, 12), random_image(220, 220, 13))


@pytest.fixture(scope="module")
def engine(tiny_fp32):
    return Engine(tiny_fp32)


def read_ahead(events_iter) -> ReadAhead:
    events = list(events_iter)
    assert isinstance(events[-1], ReadAhead) and not any(isinstance(e, TurnStats) for e in events)
    return events[-1]


def expected(engine, model, turns, text, images):
    """Greedy tokens transformers gives for `text` about `images` after `turns` answered by us."""
    history, pending = History(engine), []
    conv = engine.new_conversation()
    for question, pictures in turns:
        history.add_question(question, pictures, pending)
        stats = run_turn(conv, question, pictures)[-1]
        history.add_answer(
            stats.token_ids[:-1], engine.prompts.decode([t for t in stats.token_ids if t not in engine.eos_ids])
        )
        last = stats.token_ids[-1]
        pending = ([last] if last not in engine.eos_ids else []) + [engine.prompts.end_of_turn_id]
    history.add_question(text, images, pending)
    return reference_generate(model, history.ids, history.images, GREEDY.max_new_tokens), len(history.ids)


def test_attach_then_ask_equals_asking_at_once(engine, tiny_checkpoint):
    want, _ = expected(engine, tiny_checkpoint[1], [], "What is this?", [A])
    conv = engine.new_conversation()
    ahead = read_ahead(conv.attach([A]))
    assert ahead.images == 1 and ahead.tokens_read == ahead.ahead_tokens == engine.decoder.length
    assert ahead.tokens_read > engine.image_tokens(*A.size) and not ahead.cancelled
    at_once = run_turn(engine.new_conversation(), "What is this?", [A])[-1]
    conv = engine.new_conversation()
    read_ahead(conv.attach([A]))
    stats = run_turn(conv, "What is this?", None)[-1]
    assert stats.token_ids == at_once.token_ids == want
    assert stats.prompt_tokens == at_once.prompt_tokens and stats.image_tokens == at_once.image_tokens
    assert stats.ahead_tokens == ahead.ahead_tokens
    # Only the question's own tokens and the assistant header were left at send time.
    assert stats.prompt_tokens - stats.ahead_tokens < 15
    assert stats.vision_seconds == 0.0  # the image was encoded during the read-ahead


def test_two_images_attached_one_after_the_other(engine, tiny_checkpoint, monkeypatch):
    want, _ = expected(engine, tiny_checkpoint[1], [], "Compare them.", [A, B])
    encoded = []
    original = engine.vision.encode
    monkeypatch.setattr(engine.vision, "encode", lambda pv, grid: encoded.append(grid) or original(pv, grid))
    conv = engine.new_conversation()
    first = read_ahead(conv.attach([A]))
    second = read_ahead(conv.attach([B]))
    assert second.images == 2
    # The second read adds B's run and its markers only: A stays in the cache as it is.
    assert second.tokens_read == engine.image_tokens(*B.size) + 2
    assert second.ahead_tokens == first.ahead_tokens + second.tokens_read
    stats = run_turn(conv, "Compare them.", [A, B])[-1]
    assert stats.token_ids == want
    assert len(encoded) == 2


def test_remove_then_attach_another(engine, tiny_checkpoint):
    want, _ = expected(engine, tiny_checkpoint[1], [], "What is this?", [C])
    conv = engine.new_conversation()
    read_ahead(conv.attach([A]))
    removed = read_ahead(conv.prepare([]))
    assert removed.images == 0 and engine.decoder.length == 0 and conv.context_used == 0
    read_ahead(conv.attach([C]))
    assert conv.attached == [C]
    assert run_turn(conv, "What is this?", None)[-1].token_ids == want


def test_removing_the_first_image_rereads_the_second_without_encoding_it(engine, tiny_checkpoint, monkeypatch):
    want, _ = expected(engine, tiny_checkpoint[1], [], "What is this?", [B])
    conv = engine.new_conversation()
    read_ahead(conv.attach([A, B]))
    encoded = []
    original = engine.vision.encode
    monkeypatch.setattr(engine.vision, "encode", lambda pv, grid: encoded.append(grid) or original(pv, grid))
    only_b = read_ahead(conv.prepare([B]))
    assert only_b.images == 1 and only_b.vision_seconds == 0.0 and not encoded
    assert only_b.ahead_tokens == engine.decoder.length
    assert run_turn(conv, "What is this?", [B])[-1].token_ids == want


def test_image_attached_before_the_third_question(engine, tiny_checkpoint):
    turns = [("Describe this picture.", [A]), ("Tell me more.", [])]
    want, total = expected(engine, tiny_checkpoint[1], turns, "And this one?", [B])
    conv = engine.new_conversation()
    for question, pictures in turns:
        run_turn(conv, question, pictures)
    length = engine.decoder.length
    ahead = read_ahead(conv.attach([B]))
    assert conv.context_used == length + ahead.ahead_tokens  # the last answer's tail is read too
    stats = run_turn(conv, "And this one?", None)[-1]
    assert stats.token_ids == want
    assert stats.ahead_tokens == ahead.ahead_tokens


@pytest.mark.parametrize("stage", [Stage.ENCODING_IMAGE, Stage.READING_PROMPT])
def test_cancel_during_the_read_ahead_then_ask(stage, engine, tiny_checkpoint):
    want, _ = expected(engine, tiny_checkpoint[1], [], "Compare them.", [A, B])
    conv = engine.new_conversation()
    read_ahead(conv.attach([A]))
    length, attached = engine.decoder.length, conv.attached
    events = []
    for event in conv.attach([B]):
        events.append(event)
        if isinstance(event, StatusEvent) and event.stage == stage:
            conv.cancel()
    assert events[-1].cancelled and events[-1].images == 1
    assert engine.decoder.length == length and conv.attached == attached  # as before the attach
    stats = run_turn(conv, "Compare them.", [A, B])[-1]
    assert stats.token_ids == want


def test_asking_about_other_images_than_attached(engine, tiny_checkpoint):
    want, _ = expected(engine, tiny_checkpoint[1], [], "What is this?", [B])
    conv = engine.new_conversation()
    read_ahead(conv.attach([A]))
    stats = run_turn(conv, "What is this?", [B])[-1]
    assert stats.token_ids == want and stats.ahead_tokens < 5  # only the turn's opening was reusable


def test_a_copy_of_the_file_counts_as_the_same_image(engine, tmp_path):
    """The app attaches the dropped file and asks with its stored copy: same bytes, same image."""
    original, copy = tmp_path / "dropped.png", tmp_path / "chats" / "copy.png"
    A.save(original)
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    conv = engine.new_conversation()
    ahead = read_ahead(conv.attach([original]))
    stats = run_turn(conv, "What is this?", [copy])[-1]
    assert stats.ahead_tokens == ahead.ahead_tokens


def test_another_detail_reads_again(engine, tiny_checkpoint):
    conv = engine.new_conversation()
    read_ahead(conv.attach([A], detail="standard"))
    at_once = run_turn(engine.new_conversation(), "What is this?", [A], GREEDY)[-1]
    conv = engine.new_conversation()
    read_ahead(conv.attach([A], detail="high"))
    stats = list(conv.ask("What is this?", [A], GREEDY, detail="standard"))[-1]
    assert stats.ahead_tokens < 5 and stats.token_ids == at_once.token_ids


def test_new_chat_and_regenerate_drop_what_was_read_ahead(engine):
    conv = engine.new_conversation()
    run_turn(conv, "Hi", [])
    length = engine.decoder.length
    read_ahead(conv.attach([A]))
    again = list(conv.regenerate(GREEDY))[-1]
    assert again.asked and conv.attached == [A]  # still the next question's image...
    assert engine.decoder.length == length  # ...but no longer read: the same (greedy) answer, nothing after it
    assert run_turn(conv, "And this?", None)[-1].image_tokens == engine.image_tokens(*A.size)
    conv = engine.new_conversation()
    assert engine.decoder.length == 0 and conv.attached == []


def test_progress_moves_forward_and_ends_at_the_question(engine):
    engine.speeds.add_vision(400, 0.02)
    for tokens in (16, 96):
        engine.speeds.add_chunk("decoder", tokens, 0, tokens * 1e-3)
    conv = engine.new_conversation()
    progress = [e.progress for e in conv.attach([A, B]) if isinstance(e, StatusEvent)]
    assert all(p is not None and p.timed for p in progress)
    fractions = [p.fraction_after() for p in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert all(p.seconds_left_after() is not None and p.seconds_left_after() >= 0 for p in progress)
    stats = run_turn(conv, "Compare them.", None)[-1]
    assert stats.predicted_wait > 0


def test_an_answer_that_fails_after_a_read_ahead_leaves_the_last_answer(engine, monkeypatch):
    conv = engine.new_conversation()
    run_turn(conv, "Hi", [])
    length, used = engine.decoder.length, conv.context_used
    read_ahead(conv.attach([A], detail="high"))
    original = engine.decoder.forward

    def fail_on_decode(ids, positions, **kwargs):
        if len(ids) == 1:
            raise MemoryError("out of memory")
        return original(ids, positions, **kwargs)

    monkeypatch.setattr(engine.decoder, "forward", fail_on_decode)
    with pytest.raises(MemoryError):
        list(conv.ask("What is this?", [A], GREEDY, detail="standard"))
    monkeypatch.setattr(engine.decoder, "forward", original)
    assert engine.decoder.length == length and conv.context_used == used and len(conv.turns) == 1
    assert conv.attached == []
    again = run_turn(conv, "What is this?", [A])[-1]
    assert again.asked and again.ahead_tokens == 0


# A template that writes plain text right before the question: its prefix ends in a space that
# the tokenizer merges with the question's first word, so the prefix read ahead is not where the
# whole turn's tokens go. The read-ahead must notice and read at send time.
MERGING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}Question: {{ c.text }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_whose_prefix_merges_with_the_question_is_read_at_send(tiny_fp32):
    from engine.prompt import PromptBuilder

    engine = Engine(tiny_fp32)
    parts = replace(engine.parts, prompts=PromptBuilder(engine.tokenizer, MERGING_TEMPLATE, engine.manifest.tokens))
    at_once = run_turn(Conversation(parts), "What is this?", [A])[-1]
    conv = Conversation(parts)
    ahead = read_ahead(conv.attach([A]))
    assert ahead.ahead_tokens > 0
    stats = run_turn(conv, "What is this?", None)[-1]
    assert stats.token_ids == at_once.token_ids and stats.prompt_tokens == at_once.prompt_tokens
    assert stats.ahead_tokens == 0 and stats.vision_seconds == 0.0  # re-read, but not re-encoded


TEXT_FIRST_TEMPLATE = MERGING_TEMPLATE.replace("{% for c in m.content %}", "{% for c in m.content | reverse %}")


def test_a_template_with_images_after_the_text_keeps_them_for_the_question(tiny_fp32):
    """Nothing can be read before the question; the images are still the next question's."""
    from engine.prompt import PromptBuilder

    engine = Engine(tiny_fp32)
    parts = replace(engine.parts, prompts=PromptBuilder(engine.tokenizer, TEXT_FIRST_TEMPLATE, engine.manifest.tokens))
    at_once = run_turn(Conversation(parts), "What is this?", [A])[-1]
    conv = Conversation(parts)
    ahead = read_ahead(conv.attach([A]))
    assert ahead.images == 0 and ahead.ahead_tokens == 0 and engine.decoder.length == 0
    assert conv.attached == [A]
    stats = run_turn(conv, "What is this?", None)[-1]
    assert stats.token_ids == at_once.token_ids and stats.image_tokens == at_once.image_tokens > 0
