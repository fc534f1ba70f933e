"""A multi-turn conversation whose images and history stay in the KV cache.

Each question prefills only its own new tokens: earlier turns, and the images they carried, are
never encoded or read again. Context policy: a question that does not fit in the remaining cache
is refused with ContextFullError (the conversation is left as it was, so the user can start a new
chat or ask something shorter); an answer that reaches the end of the cache stops with
stop_reason "context_full".
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ContextFullError, EngineError
from .events import Event, Stage, StatusEvent, TextEvent, TurnStats
from .image import PreparedImage, load_image, preprocess
from .positions import PositionState, chunk_positions, decode_positions
from .prompt import assistant_message, user_message
from .sampling import Sampler, SamplingOptions
from .text_stream import TextStream


@dataclass
class Turn:
    text: str
    images: list
    answer: str = ""
    token_ids: list[int] = field(default_factory=list)
    stats: TurnStats | None = None


@dataclass
class _Read:
    """The result of reading new tokens (and their images) into the cache."""
    positions: PositionState
    logits: np.ndarray | None
    vision_seconds: float
    prefill_seconds: float


@dataclass(frozen=True)
class _Before:
    """The conversation as it was before a question: where a failed answer returns it to."""
    cache_length: int
    positions: PositionState
    pending: list[int]
    messages: int
    turns: int


@dataclass
class _Rewind:
    """What regenerate() needs to answer the last question again without re-reading it."""
    before: _Before
    cache_length: int
    positions: PositionState
    logits: np.ndarray
    prompt_tokens: int
    image_tokens: int
    vision_seconds: float
    prefill_seconds: float


def _holding_engine(method):
    """Run a generator method with the engine to itself, on this conversation's own KV cache.

    Another caller (the local server) may be generating: say so, and wait, unless cancelled."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._cancel.clear()  # every call starts afresh: a stale Stop never ends a later question
        if not self.engine.lock.acquire(blocking=False):
            yield StatusEvent(Stage.WAITING)
            if not self.engine.hold(self._cancel.is_set):
                yield self._nothing_answered(0)
                return
        try:
            self.engine.decoder.bind(self._kv)
            return (yield from method(self, *args, **kwargs))
        finally:
            self.engine.lock.release()
    return wrapper


class Conversation:
    def __init__(self, engine):
        self.engine = engine
        self.turns: list[Turn] = []
        self._messages: list[dict] = []
        self._positions = PositionState()
        self._pending: list[int] = []  # tokens of the last answer not yet in the cache
        self._cancel = threading.Event()
        self._rewind: _Rewind | None = None
        self._closed = False
        self._kv = engine.decoder.default_cache  # the app has one conversation at a time
        self._kv.reset()

    # -- public --------------------------------------------------------------------------------
    @property
    def context_used(self) -> int:
        return self._kv.length + len(self._pending)

    def cancel(self) -> None:
        """Thread-safe: the running ask(), regenerate() or restore() stops before its next step.

        A cancel with nothing running has no effect: every call starts with the flag cleared, so
        a stale Stop never ends a later question. A caller that may cancel before its call has
        started (a UI thread) repeats cancel() once the call has yielded its first event."""
        self._cancel.set()

    def close(self) -> None:
        self._closed = True

    @_holding_engine
    def ask(self, text: str, images: Sequence = (), sampling: SamplingOptions | None = None,
            detail: str | None = None) -> Iterator[Event]:
        """Answer `text` about `images` (paths, bytes or PIL images), streaming events.

        `detail` ("standard" / "high") overrides the engine's image detail for this question."""
        self._check_open()
        eng = self.engine
        detail = eng.options.max_pixels(detail)
        prepared = [preprocess(load_image(img), eng.image_config, detail) for img in images]
        message = user_message(text, len(prepared))
        new_ids = self._pending + eng.prompts.encode_turn(self._messages, message,
                                                          [p.num_tokens for p in prepared])
        if eng.decoder.length + len(new_ids) + 2 > eng.context_limit:  # + an answer token + end of turn
            raise ContextFullError(
                f"This conversation is full: the question needs {len(new_ids)} more tokens but only "
                f"{max(eng.context_limit - eng.decoder.length - 2, 0)} of {eng.context_limit} are left. "
                f"Start a new chat to go on (or ask with a smaller image).")
        start = time.perf_counter()
        before = _Before(eng.decoder.length, self._positions, list(self._pending), len(self._messages), len(self.turns))
        read = yield from self._read(new_ids, prepared)
        if read is None:  # cancelled while encoding or reading: nothing changed
            yield self._nothing_answered(len(new_ids))
            return
        after, logits = read.positions, read.logits[-1]
        self._positions, self._pending = after, []
        self._messages.append(message)
        self.turns.append(Turn(text, list(images)))
        self._rewind = _Rewind(before, eng.decoder.length, after, logits, len(new_ids),
                               sum(p.num_tokens for p in prepared), read.vision_seconds, read.prefill_seconds)
        yield from self._answer_or_undo(start, sampling)

    @_holding_engine
    def restore(self, turns: Sequence[tuple[str, Sequence, str]], detail: str | None = None) -> Iterator[Event]:
        """Re-read a saved conversation, given as (question, images, answer) turns, into this (new)
        conversation, so that follow-up questions can refer to it. The history is tokenized as the
        chat template renders it (answers as text) and read in one prefill; nothing is generated.
        Yields status events and a TurnStats with stop_reason "restored" (or "cancelled": then the
        conversation stays empty)."""
        self._check_open()
        if self.turns or self.engine.decoder.length:
            raise EngineError("A conversation can only be restored before its first question.")
        eng = self.engine
        max_pixels = eng.options.max_pixels(detail)
        messages: list[dict] = []
        prepared: list[PreparedImage] = []
        for question, images, answer in turns:
            these = [preprocess(load_image(img), eng.image_config, max_pixels) for img in images]
            prepared += these
            messages += [user_message(question, len(these)), assistant_message(answer)]
        ids = eng.prompts.encode_conversation(messages, [p.num_tokens for p in prepared],
                                              add_generation_prompt=False)
        cut = len(ids) - ids[::-1].index(eng.prompts.end_of_turn_id) if messages else 0
        ids, pending = ids[:cut - 1], [eng.prompts.end_of_turn_id]  # the cache ends before <|im_end|>
        if len(ids) + len(pending) + 2 > eng.context_limit:
            raise ContextFullError(f"This saved conversation needs {len(ids)} tokens, more than the "
                                   f"{eng.context_limit} the model is set up for. Start a new chat.")
        read = yield from self._read(ids, prepared)
        if read is None:
            yield self._nothing_answered(len(ids))
            return
        self._positions, self._pending, self._messages = read.positions, pending, messages
        self.turns = [Turn(q, list(images), answer) for q, images, answer in turns]
        yield TurnStats(image_tokens=sum(p.num_tokens for p in prepared), prompt_tokens=len(ids), new_tokens=0,
                        vision_seconds=read.vision_seconds, prefill_seconds=read.prefill_seconds,
                        time_to_first_token=0.0, decode_tokens_per_second=0.0, stop_reason="restored",
                        context_used=self.context_used, context_limit=eng.context_limit)

    @_holding_engine
    def regenerate(self, sampling: SamplingOptions | None = None) -> Iterator[Event]:
        """Answer the last question again: the cache is rewound to just after the question."""
        self._check_open()
        if self._rewind is None or not self.turns:
            raise EngineError("There is no question to answer again.")
        r = self._rewind
        self.engine.decoder.reset(r.cache_length)
        self._positions, self._pending = r.positions, []
        self._messages.pop()  # the previous answer
        turn = self.turns[-1]
        turn.answer, turn.token_ids, turn.stats = "", [], None
        yield from self._answer_or_undo(time.perf_counter(), sampling, regenerated=True)

    # -- steps ---------------------------------------------------------------------------------
    def _read(self, ids: list[int], prepared: list[PreparedImage]) -> Generator[Event, None, _Read | None]:
        """Encode the images and prefill `ids` into the cache, yielding status events; None if a
        cancel came first (the cache is then as it was)."""
        eng = self.engine
        visual, vision_seconds = None, 0.0
        if prepared:
            yield StatusEvent(Stage.ENCODING_IMAGE)
            t0 = time.perf_counter()
            visual = self._encode(prepared, ids)
            vision_seconds = time.perf_counter() - t0
            if visual is None:
                return None
        yield StatusEvent(Stage.READING_PROMPT)
        positions, after = chunk_positions(ids, [p.grid_thw for p in prepared], eng.image_token_id,
                                           self._positions, eng.merge_size)
        t0 = time.perf_counter()
        logits = None
        if ids:
            logits = eng.decoder.prefill(np.asarray(ids), positions, *(visual or ()),
                                         chunk=eng.options.prefill_chunk, should_stop=self._cancel.is_set)
            if logits is None:
                return None
        return _Read(after, logits, vision_seconds, time.perf_counter() - t0)

    def _answer_or_undo(self, start: float, sampling: SamplingOptions | None,
                        regenerated: bool = False) -> Iterator[Event]:
        """_answer, or, if it fails or its caller abandons it half-way, the conversation as it was
        before the question: never a question without its answer, nor a cache ahead of the history."""
        finished = False
        answer = self._answer(start, sampling, regenerated)
        try:
            for event in answer:
                finished = finished or isinstance(event, TurnStats)  # the turn is complete once its stats come
                yield event
        except BaseException:
            answer.close()
            if finished:  # a caller that stops after the final stats keeps the finished turn
                raise
            b = self._rewind.before
            self.engine.decoder.reset(b.cache_length)
            self._positions, self._pending = b.positions, b.pending
            del self._messages[b.messages:], self.turns[b.turns:]
            self._rewind = None
            raise

    def _nothing_answered(self, prompt_tokens: int) -> TurnStats:
        """Stats of a question cancelled before its answer began; the conversation is unchanged."""
        return TurnStats(image_tokens=0, prompt_tokens=prompt_tokens, new_tokens=0, vision_seconds=0.0,
                         prefill_seconds=0.0, time_to_first_token=0.0, decode_tokens_per_second=0.0,
                         stop_reason="cancelled", context_used=self.context_used,
                         context_limit=self.engine.context_limit, asked=False)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("This conversation was replaced by a newer one.")

    def _encode(self, prepared: list[PreparedImage], new_ids: list[int]):
        embeds, deepstack = [], []
        for image in prepared:
            if self._cancel.is_set():
                break
            e, d = self.engine.vision.encode(image.pixel_values, image.grid_thw)
            embeds.append(e)
            deepstack.append(d)
        if len(embeds) < len(prepared):
            return None
        pos = np.flatnonzero(np.asarray(new_ids) == self.engine.image_token_id)
        return np.concatenate(embeds, 0), pos, np.concatenate(deepstack, 1)

    def _answer(self, start: float, sampling: SamplingOptions | None, regenerated: bool = False) -> Iterator[Event]:
        eng, r, turn = self.engine, self._rewind, self.turns[-1]
        options = sampling or eng.default_sampling()
        sampler = Sampler(options)
        stream = TextStream(eng.tokenizer)
        yield StatusEvent(Stage.ANSWERING)
        generated: list[int] = []
        fed = 0  # how many of `generated` are in the cache (a cancel can land after a token was fed)
        logits = r.logits
        first_token_at = None
        stop = "max_new_tokens"
        decode_start = time.perf_counter()
        while len(generated) < options.max_new_tokens:
            if self._cancel.is_set():
                stop = "cancelled"
                break
            token = sampler.next_token(logits, generated)
            generated.append(token)
            if first_token_at is None:
                first_token_at = time.perf_counter()
                decode_start = first_token_at
            if token in eng.eos_ids:
                stop = "eos"
                break
            piece = stream.push(token)
            if piece:
                yield TextEvent(piece)
            if len(generated) >= options.max_new_tokens:
                break
            if eng.decoder.length + 3 > eng.context_limit:  # this token, the next, and the end of turn
                stop = "context_full"
                break
            pos, self._positions = decode_positions(self._positions)
            logits = eng.decoder.forward(np.array([token]), pos)[-1]
            fed = len(generated)
        tail = stream.flush()
        if tail:
            yield TextEvent(tail)
        # The next turn feeds what the cache lacks: the last token unless a cancel came after it
        # was fed, then the end of turn (an EOS is replaced by the template's end-of-turn token,
        # which is what the history renders). The cache then holds exactly the visible answer.
        end = eng.prompts.end_of_turn_id
        self._pending = [t for t in generated[fed:] if t not in eng.eos_ids] + [end]
        text_ids = [t for t in generated if t not in eng.eos_ids]
        turn.answer = eng.prompts.decode(text_ids)
        turn.token_ids = generated
        self._messages.append(assistant_message(turn.answer))
        now = time.perf_counter()
        decode_steps = max(len(generated) - 1, 0)
        turn.stats = TurnStats(
            image_tokens=0 if regenerated else r.image_tokens,
            prompt_tokens=0 if regenerated else r.prompt_tokens,
            new_tokens=len(generated),
            vision_seconds=0.0 if regenerated else r.vision_seconds,
            prefill_seconds=0.0 if regenerated else r.prefill_seconds,
            time_to_first_token=(first_token_at - start) if first_token_at else 0.0,
            decode_tokens_per_second=decode_steps / (now - decode_start) if decode_steps else 0.0,
            stop_reason=stop,
            context_used=self.context_used,
            context_limit=eng.context_limit,
            token_ids=list(generated),
        )
        yield turn.stats
