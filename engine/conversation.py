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

from .decoding import Decoding
from .errors import ContextFullError, EngineError
from .events import Event, ReadAhead, Stage, StatusEvent, TextEvent, TurnStats
from .model_parts import ModelParts
from .positions import PositionState
from .prompt import assistant_message, user_message
from .read_ahead import Ahead, Before, Segment, segment_marks
from .reading import ImageInput, Reader, prepare_inputs
from .sampling import Sampler, SamplingOptions
from .text_stream import TextStream
from .tokens import Tokens

# Cache slots every read and every answer step leaves free: one for the answer's last token, fed
# only with the next turn, and one for the end-of-turn token that closes the answer.
TURN_END_RESERVE = 2


@dataclass
class Turn:
    text: str
    images: list
    answer: str = ""
    token_ids: list[int] = field(default_factory=list)
    stats: TurnStats | None = None


@dataclass
class _Rewind:
    """What regenerate() needs to answer the last question again without re-reading it."""

    before: Before
    cache_length: int
    positions: PositionState
    logits: np.ndarray
    prompt_tokens: int
    image_tokens: int
    vision_seconds: float
    prefill_seconds: float
    ahead_tokens: int = 0  # of prompt_tokens, read before the question came
    predicted_wait: float | None = None


def _taking_turn(method):
    """Run a generator method with the decoder to itself, on this conversation's own KV cache.

    Another caller (the local server) may be generating: say so, and wait, unless cancelled."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._cancel.clear()  # every call starts afresh: a stale Stop never ends a later question
        turns = self.parts.turn_taking
        if not turns.try_take():
            yield StatusEvent(Stage.WAITING)
            if not turns.hold(self._cancel.is_set):
                yield self._unanswered("cancelled", 0)
                return
        try:
            self.parts.decoder.bind(self._kv)
            return (yield from method(self, *args, **kwargs))
        finally:
            turns.release()

    return wrapper


class Conversation:
    """One chat on the decoder's default KV cache, built from the model's parts (Engine makes one
    with new_conversation(), which also closes the one before)."""

    def __init__(self, parts: ModelParts):
        self.parts = parts
        self.turns: list[Turn] = []
        self._messages: list[dict] = []
        self._positions = PositionState()
        self._pending: list[int] = []  # tokens of the last answer not yet in the cache
        self._cancel = threading.Event()
        self._rewind: _Rewind | None = None
        self._closed = False
        self._kv = parts.decoder.default_cache  # the app has one conversation at a time
        self._kv.reset()
        self._ahead: Ahead | None = None  # images read before their question
        self._next_images: list = []  # what prepare()/attach() were given for the next question
        self._reader = Reader(parts, self._cancel.is_set)

    # -- public --------------------------------------------------------------------------------
    @property
    def context_used(self) -> int:
        return self._kv.length + (0 if self._ahead else len(self._pending))

    def cancel(self) -> None:
        """Thread-safe: the running ask(), regenerate() or restore() stops before its next step.

        A cancel with nothing running has no effect: every call starts with the flag cleared, so
        a stale Stop never ends a later question. A caller that may cancel before its call has
        started (a UI thread) repeats cancel() once the call has yielded its first event."""
        self._cancel.set()

    def close(self) -> None:
        self._closed = True

    @property
    def attached(self) -> list:
        """The next question's images (as they were given to prepare/attach), in order; read
        ahead unless the template gives no stable place to read them to."""
        return list(self._next_images)

    def _images_read(self) -> int:
        return len(self._ahead.images) if self._ahead else 0

    @_taking_turn
    def prepare(self, images: Sequence, detail: str | None = None) -> Iterator[Event]:
        """Make `images` the next question's images and read them now, before its text exists:
        each is encoded and the user turn is read up to where the question's text begins, so
        that ask() has only the question's own tokens left. Images already read stay in the cache
        (a list that starts with them only adds); from the first one that differs, the cache is
        cut back and the rest read again (their encodings are kept). prepare([]) rolls back to
        the end of the last answer. Ends with a ReadAhead; a cancel leaves the next question's
        images as they were before the call. The answer is the same as asking all at once."""
        self._check_open()
        parts = self.parts
        max_pixels = parts.max_pixels(detail)
        inputs = prepare_inputs(images, parts.image_config, max_pixels, self._ahead.images if self._ahead else [])
        pending = self._ahead.base.pending if self._ahead else self._pending
        marks = segment_marks(parts.prompts, self._messages, pending, [item.grid for item in inputs])
        if marks is None:  # the template does not show where the text goes: read at send time
            self._drop_ahead()
            self._next_images = list(images)
            yield ReadAhead(0, 0, 0, 0.0, 0.0)
            return
        ahead = self._ahead_or_new(max_pixels)
        kept = self._keep(ahead, inputs, marks[-1][1].ids if marks else ())
        before_length = parts.decoder.length
        seconds = yield from self._read_segments(ahead, inputs, [(n, tokens) for n, tokens in marks if n > kept])
        if seconds is None:
            yield ReadAhead(self._images_read(), 0, self._ahead_tokens(), 0.0, 0.0, cancelled=True)
            return
        if not ahead.images:
            self._drop_ahead()
        self._next_images = list(images)
        read_now = max(parts.decoder.length - before_length, 0)
        yield ReadAhead(self._images_read(), read_now, self._ahead_tokens(), *seconds)

    def attach(self, images: Sequence, detail: str | None = None) -> Iterator[Event]:
        """Add `images` to the next question's and read them now: prepare(attached + images)."""
        return self.prepare([*self.attached, *images], detail)

    @_taking_turn
    def ask(
        self,
        text: str,
        images: Sequence | None = None,
        sampling: SamplingOptions | None = None,
        detail: str | None = None,
    ) -> Iterator[Event]:
        """Answer `text` about `images` (paths, bytes or PIL images), streaming events.

        `images` are all of the question's images; None means the ones attached (read ahead).
        What was read ahead and matches is used as it is; the rest is read now. `detail`
        ("standard" / "high") overrides the default image detail for this question."""
        self._check_open()
        start = time.perf_counter()  # the wait the user sees includes decoding the images
        parts = self.parts
        max_pixels = parts.max_pixels(detail)
        images = self.attached if images is None else images
        if self._ahead is not None and self._ahead.max_pixels != max_pixels:
            self._drop_ahead()  # read at another detail: those tokens are not this question's
        inputs = prepare_inputs(images, parts.image_config, max_pixels, self._ahead.images if self._ahead else [])
        message = user_message(text, len(inputs))
        base = self._ahead.base if self._ahead else self._as_after_last_answer()
        tokens = Tokens.text(base.pending) + parts.prompts.encode_turn(
            self._messages, message, [item.grid for item in inputs]
        )
        if len(tokens) > self._left(base.cache_length):
            raise self._full("the question", len(tokens), base.cache_length, "ask with a smaller image")
        rewind = yield from self._read_question(base, max_pixels, inputs, tokens)
        if rewind is None:  # cancelled while encoding or reading: what was read ahead stays
            yield self._unanswered("cancelled", len(tokens))
            return
        self._start_turn(Turn(text, list(images)), message, rewind)
        yield from self._answer_or_undo(start, sampling)

    @_taking_turn
    def restore(self, turns: Sequence[tuple[str, Sequence, str]], detail: str | None = None) -> Iterator[Event]:
        """Re-read a saved conversation, given as (question, images, answer) turns, into this (new)
        conversation, so that follow-up questions can refer to it. The history is tokenized as the
        chat template renders it (answers as text) and read in one prefill; nothing is generated.
        Yields status events and a TurnStats with stop_reason "restored" (or "cancelled": then the
        conversation stays empty)."""
        self._check_open()
        if self.turns or self.parts.decoder.length:
            raise EngineError("A conversation can only be restored before its first question.")
        parts = self.parts
        max_pixels = parts.max_pixels(detail)
        messages: list[dict] = []
        inputs: list[ImageInput] = []
        for question, images, answer in turns:
            these = prepare_inputs(images, parts.image_config, max_pixels)
            inputs += these
            messages += [user_message(question, len(these)), assistant_message(answer)]
        ids = parts.prompts.encode_conversation(messages, [i.grid for i in inputs], add_generation_prompt=False)
        cut = len(ids) - ids.ids[::-1].index(parts.prompts.end_of_turn_id) if messages else 0
        ids, pending = ids.before(max(cut - 1, 0)), [parts.prompts.end_of_turn_id]  # the cache ends before <|im_end|>
        if len(ids) + len(pending) > self._left(0):
            raise ContextFullError(
                f"This saved conversation needs {len(ids)} tokens, more than the "
                f"{parts.context_limit} the model is set up for. Start a new chat."
            )
        read = yield from self._reader.read(ids, inputs, self._positions)
        if read is None:
            yield self._unanswered("cancelled", len(ids))
            return
        self._positions, self._pending, self._messages = read.positions, pending, messages
        self.turns = [Turn(q, list(images), answer) for q, images, answer in turns]
        image_tokens = sum(i.grid.tokens for i in inputs)
        yield self._unanswered("restored", len(ids), image_tokens, read.vision_seconds, read.prefill_seconds)

    @_taking_turn
    def regenerate(self, sampling: SamplingOptions | None = None) -> Iterator[Event]:
        """Answer the last question again: the cache is rewound to just after the question."""
        self._check_open()
        if self._rewind is None or not self.turns:
            raise EngineError("There is no question to answer again.")
        r = self._rewind
        self._ahead = None  # images read ahead for a next question come after the answer: cut too
        self.parts.decoder.reset(r.cache_length)
        self._positions, self._pending = r.positions, []
        self._messages.pop()  # the previous answer
        turn = self.turns[-1]
        turn.answer, turn.token_ids, turn.stats = "", [], None
        yield from self._answer_or_undo(time.perf_counter(), sampling, regenerated=True)

    # -- steps ---------------------------------------------------------------------------------
    def _left(self, cached: int) -> int:
        """Tokens a read may still add after `cached` ones and leave the answer its reserve."""
        return self.parts.context_limit - cached - TURN_END_RESERVE

    def _full(self, what: str, needed: int, cached: int, advice: str) -> ContextFullError:
        limit = self.parts.context_limit
        return ContextFullError(
            f"This conversation is full: {what} needs {needed} more tokens but only "
            f"{max(self._left(cached), 0)} of {limit} are left. Start a new chat to go on (or {advice})."
        )

    def _read_question(
        self, base: Before, max_pixels: int, inputs: list[ImageInput], tokens: Tokens
    ) -> Generator[Event, None, _Rewind | None]:
        """Read what the read-ahead lacks of the question's `tokens`; what answering (and answering
        again) needs of the read, or None if cancelled (what was read ahead stays)."""
        ahead = self._ahead_or_new(max_pixels)
        kept = self._keep(ahead, inputs, tokens.ids)
        ahead_tokens = len(ahead.tokens)
        new_tokens, new_inputs = tokens.after(ahead_tokens), inputs[kept:]
        plan = self._reader.plan(new_inputs, len(new_tokens), self.parts.decoder.length)
        try:
            read = yield from self._reader.read(new_tokens, new_inputs, ahead.positions, plan)
        finally:
            if not ahead.marks:  # nothing read ahead (any more): the conversation is as after its last answer
                self._ahead = None
        if read is None:
            return None
        return _Rewind(
            base,
            self.parts.decoder.length,
            read.positions,
            read.logits[-1],
            len(tokens),
            sum(item.grid.tokens for item in inputs),
            read.vision_seconds,
            read.prefill_seconds,
            ahead_tokens,
            plan.seconds if plan.timed else None,
        )

    def _start_turn(self, turn: Turn, message: dict, rewind: _Rewind) -> None:
        """The question is in the cache: it joins the history and nothing is read ahead any more."""
        self._ahead, self._next_images, self._rewind = None, [], rewind
        self._positions, self._pending = rewind.positions, []
        self._messages.append(message)
        self.turns.append(turn)

    def _answer_or_undo(
        self, start: float, sampling: SamplingOptions | None, regenerated: bool = False
    ) -> Iterator[Event]:
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
            self.parts.decoder.reset(b.cache_length)
            self._positions, self._pending = b.positions, b.pending
            del self._messages[b.messages :], self.turns[b.turns :]
            self._rewind, self._ahead, self._next_images = None, None, []
            raise

    def _unanswered(self, stop_reason: str, prompt_tokens: int, image_tokens=0, vision=0.0, prefill=0.0) -> TurnStats:
        """Stats of a call that generated nothing: a restored history, or a question cancelled
        before its answer began (not asked: the conversation is as it was)."""
        return TurnStats(
            image_tokens=image_tokens,
            prompt_tokens=prompt_tokens,
            new_tokens=0,
            vision_seconds=vision,
            prefill_seconds=prefill,
            time_to_first_token=0.0,
            decode_tokens_per_second=0.0,
            stop_reason=stop_reason,
            context_used=self.context_used,
            context_limit=self.parts.context_limit,
            asked=stop_reason != "cancelled",
        )

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("This conversation was replaced by a newer one.")

    # -- reading ahead -------------------------------------------------------------------------
    def _read_segments(
        self, ahead: Ahead, inputs: list[ImageInput], segments: list[Segment]
    ) -> Generator[Event, None, tuple[float, float] | None]:
        """Read each (images, tokens from the base) segment after what `ahead` holds: all of them,
        giving (vision, prefill) seconds, or none (a cancel: None, or no room: ContextFullError),
        the read-ahead and the cache left as they were."""
        decoder, snapshot = self.parts.decoder, len(ahead.marks)
        plan = ahead.plan(self._reader, inputs, segments, decoder.length)
        vision = prefill = 0.0
        for count, tokens in segments:
            new_tokens, new_inputs = tokens.after(len(ahead.tokens)), inputs[len(ahead.images) : count]
            if len(new_tokens) > self._left(decoder.length):
                full = self._full("the image", len(new_tokens), decoder.length, "use a smaller image")
                decoder.reset(ahead.cut(snapshot))
                raise full
            read = yield from self._reader.read(new_tokens, new_inputs, ahead.positions, plan)
            if read is None:
                decoder.reset(ahead.cut(snapshot))
                return None
            ahead.add(new_inputs, new_tokens, read.positions)
            vision, prefill = vision + read.vision_seconds, prefill + read.prefill_seconds
        return vision, prefill

    def _ahead_or_new(self, max_pixels: int) -> Ahead:
        if self._ahead is not None and self._ahead.max_pixels != max_pixels:
            self._drop_ahead()
        if self._ahead is None:
            self._ahead = Ahead(self._as_after_last_answer(), max_pixels)
        return self._ahead

    def _as_after_last_answer(self) -> Before:
        """Where the conversation is when nothing is read ahead: what a question starts from."""
        return Before(
            self.parts.decoder.length, self._positions, list(self._pending), len(self._messages), len(self.turns)
        )

    def _keep(self, ahead: Ahead, inputs: list[ImageInput], target: list[int]) -> int:
        """Cut the read-ahead (and the cache) back to what `inputs` and `target` start with;
        returns how many images that keeps."""
        length, kept = ahead.keep([item.key for item in inputs], target)
        self.parts.decoder.reset(length)
        return kept

    def _drop_ahead(self) -> None:
        """Roll the cache back to the end of the last answer (nothing read ahead)."""
        if self._ahead is not None:
            self.parts.decoder.reset(self._ahead.base.cache_length)
            self._ahead = None

    def _ahead_tokens(self) -> int:
        return len(self._ahead.tokens) if self._ahead else 0

    def _answer(self, start: float, sampling: SamplingOptions | None, regenerated: bool = False) -> Iterator[Event]:
        parts = self.parts
        options = sampling or parts.sampling
        yield StatusEvent(Stage.ANSWERING)
        decoding = Decoding(
            parts.decoder,
            Sampler(options),
            self._rewind.logits,
            self._positions,
            parts.eos_ids,
            options.max_new_tokens,
            parts.context_limit,
            reserve=TURN_END_RESERVE,
            should_stop=self._cancel.is_set,
        )
        stream = TextStream(parts.prompts.tokenizer)
        for token in decoding:
            piece = stream.push(token)
            if piece:
                yield TextEvent(piece)
        tail = stream.flush()
        if tail:
            yield TextEvent(tail)
        yield self._end_turn(decoding, start, regenerated)

    def _end_turn(self, decoding: Decoding, start: float, regenerated: bool) -> TurnStats:
        """Record the answer in the history and say what the turn took."""
        parts, r, turn = self.parts, self._rewind, self.turns[-1]
        generated = decoding.generated
        self._positions = decoding.positions
        # The next turn feeds what the cache lacks: the last token unless a cancel came after it
        # was fed, then the end of turn (an EOS is replaced by the template's end-of-turn token,
        # which is what the history renders). The cache then holds exactly the visible answer.
        unfed = [t for t in generated[decoding.fed :] if t not in parts.eos_ids]
        self._pending = unfed + [parts.prompts.end_of_turn_id]
        turn.answer = parts.prompts.decode([t for t in generated if t not in parts.eos_ids])
        turn.token_ids = generated
        self._messages.append(assistant_message(turn.answer))
        first = decoding.first_token_at
        turn.stats = TurnStats(
            image_tokens=0 if regenerated else r.image_tokens,
            prompt_tokens=0 if regenerated else r.prompt_tokens,
            new_tokens=len(generated),
            vision_seconds=0.0 if regenerated else r.vision_seconds,
            prefill_seconds=0.0 if regenerated else r.prefill_seconds,
            time_to_first_token=(first - start) if first else 0.0,
            decode_tokens_per_second=decoding.tokens_per_second(time.perf_counter()),
            stop_reason=decoding.stop,
            context_used=self.context_used,
            context_limit=parts.context_limit,
            token_ids=list(generated),
            ahead_tokens=0 if regenerated else r.ahead_tokens,
            predicted_wait=None if regenerated else r.predicted_wait,
        )
        return turn.stats
