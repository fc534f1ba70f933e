"""One completion on the shared engine: pick a slot, read only what it lacks, then sample.

Runs on the server's generation thread while it has `engine.turn_taking`, so the app's own chat (on
its own KV cache) and the server take turns. A cancel (client gone) lands between images,
between prompt chunks and before every decode step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.decoding import Decoding
from engine.positions import token_positions
from engine.reading import Reader, ReadResult
from engine.sampling import Sampler, SamplingOptions
from engine.text_stream import TextStream

from .prefix import Slot, SlotPool
from .prompt import Prompt
from .stops import StopText


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length", or "cancelled" (nobody is listening any more)
    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the cache, not read again
    completion_tokens: int
    token_ids: list[int]
    time_to_first_token: float  # seconds from holding the engine to the first token


def complete(
    engine,
    pool: SlotPool,
    prompt: Prompt,
    sampling: SamplingOptions,
    stops=(),
    cancel: threading.Event | None = None,
    on_text: Callable[[str], None] = lambda text: None,
) -> Completion:
    """Answer `prompt`; `sampling.max_new_tokens` bounds the answer, the context bounds it too."""
    cancel = cancel or threading.Event()
    if not engine.turn_taking.hold(cancel.is_set):  # the app's chat is answering
        return _nothing(prompt)
    try:
        return _complete(engine, pool, prompt, sampling, stops, cancel, on_text)
    finally:
        engine.decoder.bind(engine.decoder.default_cache)  # as the app's chat expects to find it
        engine.turn_taking.release()


def _nothing(prompt: Prompt) -> Completion:
    return Completion("", "cancelled", len(prompt.tokens), 0, 0, [], 0.0)


def _complete(engine, pool, prompt, sampling, stops, cancel, on_text) -> Completion:
    start = time.perf_counter()
    if cancel.is_set():  # gone while waiting in line: evict no cached conversation for nobody
        return _nothing(prompt)
    slot, keep = pool.choose(prompt)
    read = _read_into(slot, keep, engine, prompt, cancel)
    if read is None:
        return _nothing(prompt)
    decoding = Decoding(
        engine.decoder,
        Sampler(sampling),
        read.logits[-1],
        read.positions,
        engine.eos_ids,
        sampling.max_new_tokens,
        engine.context_limit,
        reserve=0,
        should_stop=cancel.is_set,
    )
    try:
        text = _answer_text(decoding, TextStream(engine.tokenizer), StopText(stops), on_text)
    finally:
        slot.keys += decoding.generated[: decoding.fed]  # what the slot's cache now holds
    finish = {"eos": "stop", "stopped": "stop", "cancelled": "cancelled"}.get(decoding.stop, "length")
    answer_ids = [t for t in decoding.generated if t not in engine.eos_ids]
    return Completion(
        text,
        finish,
        len(prompt.tokens),
        keep,
        len(answer_ids),
        decoding.generated,
        (decoding.first_token_at or time.perf_counter()) - start,
    )


def _read_into(slot: Slot, keep: int, engine, prompt: Prompt, cancel: threading.Event) -> ReadResult | None:
    """Keep the first `keep` tokens of the slot's cache and read the rest of `prompt` after them
    (images, then tokens); None if cancelled (the cache then holds `keep` tokens)."""
    slot.truncate(keep)
    engine.decoder.bind(slot.cache)
    _, at_keep = token_positions(prompt.tokens.before(keep))
    reading = Reader(engine.parts, cancel.is_set).read(prompt.tokens.after(keep), prompt.images_from(keep), at_keep)
    try:
        while True:  # nobody is shown the reading's progress
            next(reading)
    except StopIteration as finished:
        read = finished.value
    except BaseException:
        slot.truncate(min(keep, slot.cache.length))
        raise
    if read is not None:
        slot.keys[keep:] = prompt.keys[keep:]
        slot.prompt_length = len(prompt.tokens)
    return read


def _answer_text(decoding: Decoding, stream: TextStream, stop_text: StopText, on_text: Callable[[str], None]) -> str:
    """Sample to the end, a stop sequence or a cancel, passing each piece of text on as it comes."""
    pieces: list[str] = []
    stopped = False  # a stop sequence was reached
    for token in decoding:
        text, stopped = stop_text.push(stream.push(token))
        if text:
            pieces.append(text)
            on_text(text)
        if stopped:
            break
    if not stopped:  # what an unfinished character or a possible stop sequence held back
        tail, _ = stop_text.push(stream.flush())
        tail += stop_text.flush()
        if tail:
            pieces.append(tail)
            on_text(tail)
    return "".join(pieces)
