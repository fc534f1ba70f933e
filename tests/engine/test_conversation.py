"""End to end: the engine's greedy answers equal transformers' generate, turn by turn.

Each later turn is compared with transformers generating from the *whole* history (all earlier
prompts, answers and images in one fresh forward pass), which proves that keeping the history and
the images in the KV cache, prefilling only the new tokens, is exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.events import Stage, StatusEvent, TextEvent, TurnStats
from engine.sampling import SamplingOptions
from tests.reference import IMAGE_PAD, image_processor, random_image

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def engine(tiny_fp32):
    return Engine(tiny_fp32)


def reference_generate(model, ids: list[int], images: list, steps: int) -> list[int]:
    """transformers' greedy generate on the full token history with all its images."""
    import torch

    ids_t = torch.tensor([ids])
    kwargs = {}
    if images:
        processed = image_processor()(images=images, return_tensors="pt")
        kwargs = dict(
            pixel_values=processed["pixel_values"],
            image_grid_thw=processed["image_grid_thw"],
            mm_token_type_ids=(ids_t == IMAGE_PAD).int(),
        )
    with torch.no_grad():
        out = model.generate(
            input_ids=ids_t,
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=[151645, 151643],
            pad_token_id=151643,
            **kwargs,
        )
    return out[0, len(ids) :].tolist()


def run_turn(conv, text, images=(), sampling=GREEDY):
    events = list(conv.ask(text, None if images is None else list(images), sampling))
    assert isinstance(events[-1], TurnStats)
    return events


def grids_of(engine, images) -> list:
    """The grids the engine gives `images` at its default detail."""
    from engine.reading import prepare_inputs

    return [item.grid for item in prepare_inputs(images, engine.image_config, engine.parts.max_pixels())]


class History:
    """The token ids the conversation has seen, rebuilt from the engine's own prompt builder."""

    def __init__(self, engine):
        self.engine, self.messages, self.ids, self.images = engine, [], [], []

    def add_question(self, text, images, pending):
        from engine.prompt import user_message

        prompts = self.engine.prompts
        grids = grids_of(self.engine, images)
        new = list(prompts.encode_turn(self.messages, user_message(text, len(images)), grids).ids)
        self.ids += pending + new
        self.messages.append(user_message(text, len(images)))
        self.images += list(images)

    def add_answer(self, token_ids, answer_text):
        from engine.prompt import assistant_message

        self.ids += token_ids  # fed back into the cache as they were generated
        self.messages.append(assistant_message(answer_text))


@pytest.mark.parametrize("case", ["one image", "text only", "two images"])
def test_single_turn_equals_generate(case, engine, tiny_checkpoint):
    model = tiny_checkpoint[1]
    images = {
        "one image": [random_image(300, 200, 1)],
        "text only": [],
        "two images": [random_image(300, 200, 1), random_image(160, 420, 2)],
    }[case]
    conv = engine.new_conversation()
    history = History(engine)
    history.add_question("Describe this image.", images, [])
    events = run_turn(conv, "Describe this image.", images)
    stats = events[-1]
    assert stats.token_ids == reference_generate(model, history.ids, images, 12)
    assert stats.prompt_tokens == len(history.ids)
    assert stats.image_tokens == sum(engine.image_tokens(*im.size) for im in images)
    text = "".join(e.text for e in events if isinstance(e, TextEvent))
    assert text == engine.prompts.decode([t for t in stats.token_ids if t not in engine.eos_ids])
    stages = [e.stage for e in events if isinstance(e, StatusEvent)]
    assert stages == [Stage.ENCODING_IMAGE] * len(images) + [Stage.READING_PROMPT, Stage.ANSWERING]


def test_three_turns_reuse_the_cache_exactly(engine, tiny_checkpoint, monkeypatch):
    """Image in turn 1, none in turn 2, another image in turn 3; each turn prefills only its own tokens."""
    model = tiny_checkpoint[1]
    encoded = []
    original = engine.vision.encode
    monkeypatch.setattr(engine.vision, "encode", lambda pv, grid: encoded.append(grid) or original(pv, grid))
    conv = engine.new_conversation()
    history = History(engine)
    pending: list[int] = []
    turns = [
        ("What is in this picture?", [random_image(300, 200, 3)]),
        ("Tell me more.", []),
        ("And how does this one differ?", [random_image(200, 260, 4)]),
    ]
    for text, images in turns:
        start = len(history.ids)
        history.add_question(text, images, pending)
        stats = run_turn(conv, text, images)[-1]
        assert stats.token_ids == reference_generate(model, history.ids, history.images, 12), text
        assert stats.prompt_tokens == len(history.ids) - start  # only this turn's tokens were read
        answer = engine.prompts.decode([t for t in stats.token_ids if t not in engine.eos_ids])
        fed = stats.token_ids[:-1]
        history.add_answer(fed, answer)
        last = stats.token_ids[-1]
        pending = ([last] if last not in engine.eos_ids else []) + [engine.prompts.end_of_turn_id]
    assert len(encoded) == 2  # each image encoded once, never again in later turns


def test_prompt_tokens_count_only_the_new_turn(engine):
    conv = engine.new_conversation()
    first = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])[-1]
    second = run_turn(conv, "Thanks!")[-1]
    assert first.prompt_tokens > first.image_tokens > 0
    assert second.image_tokens == 0 and second.prompt_tokens < 15  # no re-prefill of the history
    assert first.context_used < second.context_used <= first.context_used + second.prompt_tokens + second.new_tokens


def test_regenerate_answers_again_without_rereading(engine):
    conv = engine.new_conversation()
    sampled = SamplingOptions(temperature=1.0, top_p=1.0, top_k=0, seed=1, max_new_tokens=8)
    first = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)], sampled)[-1]
    again = list(conv.regenerate(SamplingOptions(temperature=1.0, top_p=1.0, top_k=0, seed=1, max_new_tokens=8)))
    assert again[-1].token_ids == first.token_ids  # same seed, same state: same answer
    other = list(conv.regenerate(SamplingOptions(temperature=1.0, top_p=1.0, top_k=0, seed=2, max_new_tokens=8)))
    assert other[-1].token_ids != first.token_ids
    assert other[-1].prompt_tokens == 0 and len(conv.turns) == 1


def test_cancel_stops_within_one_step(engine):
    conv = engine.new_conversation()
    seen = 0
    stats = None
    for event in conv.ask(
        "Describe this image.",
        [random_image(300, 200, 1)],
        SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=200),
    ):
        if isinstance(event, TextEvent):
            seen += 1
            if seen == 3:
                threading.Thread(target=conv.cancel).start()
                threading.Event().wait(0.05)
        stats = event
    assert stats.stop_reason == "cancelled"
    assert stats.new_tokens <= 5
    # the conversation goes on after a cancel
    assert run_turn(conv, "Go on.")[-1].new_tokens > 0


@pytest.mark.parametrize("stop_after", [1, 4])
def test_a_follow_up_after_stop_sees_exactly_the_visible_answer(stop_after, engine, tiny_checkpoint):
    """Stop mid-answer, then ask again: the follow-up equals transformers' generate on the history
    the user saw (question, the tokens shown, end of turn), and the cache holds no token more than
    an answer of the same tokens ended by max_new_tokens."""
    images = [random_image(300, 200, 1)]
    sampling = SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=200)
    conv = engine.new_conversation()
    shown = 0
    for event in conv.ask("Describe this image.", images, sampling):
        if isinstance(event, TextEvent):
            shown += 1
            if shown == stop_after:
                conv.cancel()  # lands after this token was fed to the cache
        stats = event
    assert stats.stop_reason == "cancelled"
    answer = stats.token_ids
    assert answer and not set(answer) & engine.eos_ids

    same = engine.new_conversation()
    ended = run_turn(
        same,
        "Describe this image.",
        images,
        SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=len(answer)),
    )[-1]
    assert ended.token_ids == answer and ended.stop_reason == "max_new_tokens"
    same_used = same.context_used
    expected = run_turn(same, "Tell me more.")[-1].token_ids

    conv = engine.new_conversation()  # the same stop again (the engine holds one cache at a time)
    shown = 0
    for event in conv.ask("Describe this image.", images, sampling):
        if isinstance(event, TextEvent):
            shown += 1
            if shown == stop_after:
                conv.cancel()
    assert conv.context_used == same_used
    follow_up = run_turn(conv, "Tell me more.")[-1].token_ids
    assert follow_up == expected

    history = History(engine)
    history.add_question("Describe this image.", images, [])
    history.add_answer(answer[:-1], "")
    history.add_question("Tell me more.", [], [answer[-1], engine.prompts.end_of_turn_id])
    assert follow_up == reference_generate(tiny_checkpoint[1], history.ids, images, 12)


def test_cli_answers_and_prints_json(tiny_fp32, tiny_checkpoint, tmp_path):
    image = tmp_path / "photo.png"
    random_image(300, 200, 1).save(image)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            str(tiny_fp32),
            "--image",
            str(image),
            "--prompt",
            "Describe this image.",
            "--greedy",
            "--max-new-tokens",
            "12",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    engine = Engine(tiny_fp32)
    history = History(engine)
    from PIL import Image

    img = Image.open(image).convert("RGB")
    history.add_question("Describe this image.", [img], [])
    assert result["token_ids"] == reference_generate(tiny_checkpoint[1], history.ids, [img], 12)
    assert result["stats"]["image_tokens"] == 70 and result["text"]
    from engine.cpu import cpu_info

    assert result["cpu"]["summary"] == cpu_info().summary() and result["cpu"]["cpu_class"]
    assert result["warnings"] == []


def test_cli_conversation_script(tiny_fp32, tmp_path):
    image = tmp_path / "photo.png"
    random_image(300, 200, 1).save(image)
    script = tmp_path / "chat.json"
    script.write_text(json.dumps([{"text": "Describe this image.", "images": [str(image)]}, {"text": "Tell me more."}]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            str(tiny_fp32),
            "--conversation",
            str(script),
            "--greedy",
            "--max-new-tokens",
            "6",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    turns = out["turns"]
    assert out["cpu"]["physical_cores"] >= 1
    assert len(turns) == 2 and turns[1]["stats"]["image_tokens"] == 0
    assert turns[1]["stats"]["prompt_tokens"] < turns[0]["stats"]["prompt_tokens"]


def test_cli_reports_bad_input_without_a_traceback(tiny_fp32, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "engine", str(tiny_fp32), "--image", str(bad), "--prompt", "hi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_chunked_prefill_gives_the_same_answer(tiny_fp32, tiny_checkpoint):
    """Chunks that cut through the image tokens still give transformers' answer."""
    from engine.engine import EngineOptions

    images = [random_image(300, 200, 1), random_image(160, 420, 2)]
    chunked = Engine(tiny_fp32, EngineOptions(prefill_chunk=37))
    history = History(chunked)
    history.add_question("Describe this image.", images, [])
    stats = run_turn(chunked.new_conversation(), "Describe this image.", images)[-1]
    assert stats.token_ids == reference_generate(tiny_checkpoint[1], history.ids, images, 12)


@pytest.mark.parametrize("stage", [Stage.ENCODING_IMAGE, Stage.READING_PROMPT])
def test_cancel_before_the_answer_leaves_the_conversation_unchanged(stage, tiny_fp32, tiny_checkpoint):
    from engine.engine import EngineOptions

    engine = Engine(tiny_fp32, EngineOptions(prefill_chunk=16))
    conv = engine.new_conversation()
    first = run_turn(conv, "Describe this image.", [random_image(300, 200, 1)])[-1]
    used = conv.context_used
    events = []
    for event in conv.ask("And this one?", [random_image(200, 260, 4)], GREEDY):
        events.append(event)
        if isinstance(event, StatusEvent) and event.stage == stage:
            conv.cancel()
    assert events[-1].stop_reason == "cancelled" and events[-1].new_tokens == 0
    assert not any(isinstance(e, TextEvent) for e in events)
    assert conv.context_used == used and len(conv.turns) == 1
    # the next question behaves as if the cancelled one was never asked
    images = [random_image(300, 200, 1)]
    history = History(engine)
    history.add_question("Describe this image.", images, [])
    history.add_answer(first.token_ids[:-1], "")
    last = first.token_ids[-1]
    pending = ([last] if last not in engine.eos_ids else []) + [engine.prompts.end_of_turn_id]
    history.add_question("Tell me more.", [], pending)
    stats = run_turn(conv, "Tell me more.")[-1]
    assert stats.token_ids == reference_generate(tiny_checkpoint[1], history.ids, images, 12)


def test_a_restored_conversation_answers_like_transformers_on_the_rendered_history(engine, tiny_checkpoint):
    """Saved turns (answers as text) re-read into the cache: a follow-up equals transformers'
    generate on the chat template's rendering of the whole history."""
    from engine.prompt import assistant_message, user_message

    first, second = random_image(300, 200, 1), random_image(200, 260, 4)
    saved = [
        ("What is in this picture?", [first], "A small house with a red roof."),
        ("And this one?", [second], "A tree next to a lake."),
    ]
    conv = engine.new_conversation()
    events = list(conv.restore(saved))
    assert events[-1].stop_reason == "restored" and len(conv.turns) == 2
    assert events[-1].image_tokens == engine.image_tokens(*first.size) + engine.image_tokens(*second.size)
    stats = run_turn(conv, "Which one has a tree?")[-1]
    messages = []
    for question, images, answer in saved:
        messages += [user_message(question, len(images)), assistant_message(answer)]
    messages.append(user_message("Which one has a tree?"))
    ids = list(engine.prompts.encode_conversation(messages, grids_of(engine, [first, second])).ids)
    assert stats.token_ids == reference_generate(tiny_checkpoint[1], ids, [first, second], 12)
