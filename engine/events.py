"""What a conversation yields, in order: status changes, then text pieces and one TurnStats for a
question, or one ReadAhead for images read before their question."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Stage(str, Enum):
    WAITING = "waiting for another answer"  # the engine is busy (the local server is answering)
    ENCODING_IMAGE = "encoding image"
    READING_PROMPT = "reading the prompt"
    ANSWERING = "answering"


@dataclass(frozen=True)
class Progress:
    """How far a read (images, then prompt chunks) has come, in seconds of work predicted for
    this machine: the bar moves by work, not by steps of unequal cost. `step_seconds` is the
    predicted length of the step starting now (one image can take a minute: a display can move
    on between events). Before this machine's speeds are known (`timed` False) the same fields
    count work in tokens, and there are no seconds to show."""

    done_seconds: float
    total_seconds: float
    step_seconds: float = 0.0
    timed: bool = True

    def done_after(self, elapsed: float) -> float:
        """Work done `elapsed` seconds after this was reported: a timed step moves on with the
        clock, never past its own end; an untimed one stays where the event put it."""
        if not self.timed:
            return self.done_seconds
        return self.done_seconds + min(max(elapsed, 0.0), self.step_seconds)

    def fraction_after(self, elapsed: float = 0.0) -> float:
        """The share of the read done `elapsed` seconds after this was reported, 0..1."""
        if self.total_seconds <= 0:
            return 0.0
        return min(max(self.done_after(elapsed) / self.total_seconds, 0.0), 1.0)

    def seconds_left_after(self, elapsed: float = 0.0) -> float | None:
        """Seconds left `elapsed` seconds after this was reported; None before speeds are known."""
        return max(self.total_seconds - self.done_after(elapsed), 0.0) if self.timed else None


@dataclass(frozen=True)
class StatusEvent:
    stage: Stage
    progress: Progress | None = None  # for ENCODING_IMAGE / READING_PROMPT: at each image and chunk


@dataclass(frozen=True)
class TextEvent:
    """A piece of the answer; always whole UTF-8 characters."""

    text: str


@dataclass(frozen=True)
class TurnStats:
    image_tokens: int
    prompt_tokens: int
    new_tokens: int
    vision_seconds: float
    prefill_seconds: float
    time_to_first_token: float
    decode_tokens_per_second: float
    stop_reason: str  # "eos", "max_new_tokens", "cancelled", "context_full"
    context_used: int
    context_limit: int
    token_ids: list[int] = field(default_factory=list)
    asked: bool = True  # False: cancelled before the question entered the conversation (nothing changed)
    ahead_tokens: int = 0  # of prompt_tokens, how many were read ahead (attach()) before the question came
    predicted_wait: float | None = None  # seconds to the first token predicted at send (None: not measured yet)


@dataclass(frozen=True)
class ReadAhead:
    """The end of attach()/prepare(): the next question's images, read into the cache ahead of it."""

    images: int  # images the next question has in the cache now
    tokens_read: int  # tokens this call read (vision embeddings of earlier calls are reused)
    ahead_tokens: int  # tokens the cache holds ahead of the next question
    vision_seconds: float
    prefill_seconds: float
    cancelled: bool = False  # stopped: the next question's images are as they were before the call


Event = StatusEvent | TextEvent | TurnStats | ReadAhead
