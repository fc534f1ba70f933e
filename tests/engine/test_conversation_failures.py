"""What a failed, abandoned or refused call leaves: the conversation as it was before it."""

from __future__ import annotations

import json

import pytest

from engine.engine import Engine
from engine.errors import ArtifactError, ContextFullError, ImageError
from engine.events import Stage, StatusEvent, TextEvent, TurnStats
from engine.sampling import SamplingOptions
from tests.engine.test_conversation import GREEDY, run_turn
from tests.reference import random_image


@pytest.fixture(scope="module")
def engine(tiny_fp32):
    return Engine(tiny_fp32)


@pytest.mark.parametrize("how", ["the sampler fails", "the caller abandons the answer"])
def test_an_answer_that_does_not_finish_leaves_the_conversation_as_before_the_question(how, engine, monkeypatch):
    """Never a question without its answer, nor tokens in the cache the history does not hold."""
    from engine import conversation as conversation_module
    from engine.errors import EngineError

    conv = engine.new_conversation()
    first = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])[-1]
    used, turns = conv.context_used, len(conv.turns)
    real_next = conversation_module.Sampler.next_token
    calls = []

    def failing_next(self, logits, generated):
        calls.append(1)
        if len(calls) == 4:
            raise EngineError("The model produced invalid numbers")
        return real_next(self, logits, generated)

    answer = conv.ask("And now?", [random_image(200, 260, 4)], SamplingOptions(greedy=True, max_new_tokens=50))
    if how == "the sampler fails":
        monkeypatch.setattr(conversation_module.Sampler, "next_token", failing_next)
        with pytest.raises(EngineError, match="invalid numbers"):
            list(answer)
        monkeypatch.undo()
    else:
        pieces = 0
        for event in answer:
            pieces += isinstance(event, TextEvent)
            if pieces == 3:
                answer.close()  # e.g. a server whose client went away
                break
    assert conv.context_used == used and len(conv.turns) == turns
    # the next question is answered as if the unfinished one had never been asked
    follow_up = run_turn(conv, "Tell me more.")[-1].token_ids
    again = engine.new_conversation()
    assert run_turn(again, "Describe this image.", [random_image(300, 200, 1)])[-1].token_ids == first.token_ids
    assert run_turn(again, "Tell me more.")[-1].token_ids == follow_up


def test_a_prompt_that_fails_part_way_leaves_no_token_of_it_in_the_cache(tiny_fp32, monkeypatch):
    from engine.engine import EngineOptions

    engine = Engine(tiny_fp32, EngineOptions(prefill_chunk=16))
    conv = engine.new_conversation()
    first = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])[-1]
    used = conv.context_used
    real_forward, calls = engine.decoder.forward, []

    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second chunk of the next prompt
            raise RuntimeError("out of memory")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(engine.decoder, "forward", failing_forward)
    with pytest.raises(RuntimeError):
        list(conv.ask("And this one?", [random_image(200, 260, 4)], GREEDY))
    monkeypatch.undo()
    assert conv.context_used == used and len(conv.turns) == 1
    again = engine.new_conversation()
    assert run_turn(again, "Describe this image.", [random_image(300, 200, 1)])[-1].token_ids == first.token_ids
    expected = run_turn(again, "Tell me more.")[-1].token_ids
    conv = engine.new_conversation()
    run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])
    monkeypatch.setattr(engine.decoder, "forward", failing_forward)
    calls.clear()
    with pytest.raises(RuntimeError):
        list(conv.ask("And this one?", [random_image(200, 260, 4)], GREEDY))
    monkeypatch.undo()
    assert run_turn(conv, "Tell me more.")[-1].token_ids == expected


def test_a_caller_that_stops_after_the_final_stats_keeps_the_answer(engine):
    conv = engine.new_conversation()
    answer = conv.ask("Describe this image.", [random_image(300, 200, 1)], GREEDY)
    for event in answer:
        if isinstance(event, TurnStats):
            answer.close()
            break
    assert len(conv.turns) == 1 and conv.turns[0].token_ids == event.token_ids
    assert conv.context_used == event.context_used


def test_a_cancel_with_nothing_running_does_not_stop_the_next_question(engine):
    conv = engine.new_conversation()
    conv.cancel()
    stats = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])[-1]
    assert stats.stop_reason != "cancelled" and stats.new_tokens > 0


def test_a_question_that_does_not_fit_is_refused_and_nothing_changes(tiny_fp32):
    from engine.engine import EngineOptions

    small = Engine(tiny_fp32, EngineOptions(max_context=120))
    conv = small.new_conversation()
    run_turn(conv, "Describe this image.", [random_image(300, 200, 1)], SamplingOptions(greedy=True, max_new_tokens=4))
    used = conv.context_used
    with pytest.raises(ContextFullError, match="Start a new chat"):
        list(conv.ask("And this one?", [random_image(300, 200, 2)], GREEDY))
    assert conv.context_used == used and len(conv.turns) == 1
    stats = run_turn(conv, "More.", (), SamplingOptions(greedy=True, max_new_tokens=500))[-1]
    assert stats.stop_reason == "context_full" and stats.context_used <= 120


def test_bad_images_get_their_message_and_change_nothing(engine, tmp_path):
    conv = engine.new_conversation()
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    with pytest.raises(ImageError, match="notes.png"):
        list(conv.ask("What is this?", [fake]))
    assert conv.turns == [] and conv.context_used == 0


def test_damaged_artifact_folders_are_refused_at_load(tiny_fp32, tmp_path):
    import shutil

    for damage, message in [
        ("missing", "incomplete: decoder.onnx.data is missing"),
        ("truncated", "bytes instead of"),
        ("flipped", "checksum"),
        ("version", "incompatible version"),
    ]:
        folder = tmp_path / damage
        shutil.copytree(tiny_fp32, folder)
        data = folder / "decoder.onnx.data"
        if damage == "missing":
            data.unlink()
        elif damage == "truncated":
            data.write_bytes(data.read_bytes()[:-10])
        elif damage == "flipped":
            raw = bytearray(data.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            data.write_bytes(bytes(raw))
        else:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["manifest_version"] = 99
            (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=message):
            Engine(folder)


def test_restore_refuses_what_does_not_fit_and_can_be_cancelled(tiny_fp32):
    from engine.engine import EngineOptions

    small = Engine(tiny_fp32, EngineOptions(max_context=100, prefill_chunk=16))
    saved = [("Describe this.", [random_image(300, 200, 1)], "A house. " * 10)]
    with pytest.raises(ContextFullError, match="Start a new chat"):
        list(small.new_conversation().restore(saved))
    engine = Engine(tiny_fp32, EngineOptions(prefill_chunk=16))
    conv = engine.new_conversation()
    events = []
    for event in conv.restore(saved):
        events.append(event)
        if isinstance(event, StatusEvent) and event.stage == Stage.READING_PROMPT:
            conv.cancel()
    assert events[-1].stop_reason == "cancelled" and conv.context_used == 0 and conv.turns == []
    assert run_turn(conv, "Hello")[-1].new_tokens > 0
