"""What a chat is doing, as one value: idle, holding a question for an image still opening, or
running a question or Regenerate. ChatSession replaces it whole at each step, and what a Stop, a
refusal or a failure means is read from it (Qt-free, so the rules are plain data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum


class Sent(Enum):
    """What the engine was asked for."""

    QUESTION = "a new question"
    REOPENED_QUESTION = "a new question, after re-reading the reopened chat"
    REGENERATE = "the last question again"


@dataclass(frozen=True)
class Idle:
    """Nothing running: a question can be sent."""


@dataclass(frozen=True)
class Holding:
    """A question sent while an image it is about was still opening: nothing went to the engine
    yet; it goes once the image is in, or back to the box if the image is refused."""

    question: str


@dataclass(frozen=True)
class Running:
    """The engine is on a question or Regenerate of this chat."""

    sent: Sent
    begun: bool = False  # the engine reported work on the question itself: it accepted it
    then: Callable[[], None] | None = None  # what runs once it stopped (New chat, another chat, a reload)

    def began(self) -> Running:
        return self if self.begun else replace(self, begun=True)

    def stopping_for(self, action: Callable[[], None]) -> Running:
        return replace(self, then=action)

    @property
    def answer_begun(self) -> bool:
        """Whether a failure now loses an answer the model had taken on (a Regenerate always has:
        its question was asked before)."""
        return self.begun or self.sent is Sent.REGENERATE


ChatState = Idle | Holding | Running
IDLE = Idle()
