"""What a conversation turn yields, in order: status changes, text pieces, then one TurnStats."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Stage(str, Enum):
    WAITING = "waiting for another answer"  # the engine is busy (the local server is answering)
    ENCODING_IMAGE = "encoding image"
    READING_PROMPT = "reading the prompt"
    ANSWERING = "answering"


@dataclass(frozen=True)
class StatusEvent:
    stage: Stage


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


Event = StatusEvent | TextEvent | TurnStats
