"""Bookkeeping for images read before their question: which tokens of the next user turn are
in the cache, where it can be cut back to, and what the template writes before the question.

The conversation (engine/conversation.py) does the reading; this module only decides what to
read and what to keep, so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .positions import PositionState
from .prompt import Message, PromptBuilder
from .reading import ImageInput, Plan, Reader
from .tokens import ImageGrid, Tokens

Segment = tuple[int, Tokens]  # (n, tokens): the next question's first n images, its tokens from the base through them


@dataclass(frozen=True)
class Before:
    """The conversation as it was before a question: where a failed answer returns it to."""

    cache_length: int
    positions: PositionState
    pending: list[int]
    messages: int
    turns: int


@dataclass(frozen=True)
class Mark:
    """A point the read-ahead can be cut back to: after `images` images and `tokens` tokens."""

    images: int
    tokens: int
    positions: PositionState


@dataclass
class Ahead:
    """The next question's images, read before its text: what the cache holds after `base`."""

    base: Before
    max_pixels: int
    images: list[ImageInput] = field(default_factory=list)
    tokens: Tokens = Tokens(())  # after base: pending + template + image runs
    marks: list[Mark] = field(default_factory=list)  # one per read segment, base excluded

    @property
    def positions(self) -> PositionState:
        return self.marks[-1].positions if self.marks else self.base.positions

    def add(self, images: list[ImageInput], tokens: Tokens, positions: PositionState) -> None:
        self.images += images
        self.tokens += tokens
        self.marks.append(Mark(len(self.images), len(self.tokens), positions))

    def cut(self, marks: int) -> int:
        """Keep the first `marks` segments; returns the cache length (from base) they end at."""
        del self.marks[marks:]
        images, tokens = (self.marks[-1].images, self.marks[-1].tokens) if self.marks else (0, 0)
        del self.images[images:]
        self.tokens = self.tokens.before(tokens)
        return self.base.cache_length + tokens

    def plan(self, reader: Reader, inputs: Sequence[ImageInput], segments: list[Segment], length: int) -> Plan:
        """One plan for reading `segments` after what is read, on a cache of `length`, so that
        progress runs once from 0 to 100 %."""
        plan, images, tokens = Plan([]), len(self.images), len(self.tokens)
        for count, segment in segments:
            plan = plan.then(reader.plan(inputs[images:count], len(segment) - tokens, length))
            images, length, tokens = count, length + len(segment) - tokens, len(segment)
        return plan

    def keep(self, keys: Sequence[str], target: Sequence[int]) -> tuple[int, int]:
        """Keep the longest run of segments whose pictures are `keys`' first ones and whose tokens
        `target` starts with; returns (cache length to cut back to, images kept)."""
        keep = 0
        for index, mark in enumerate(self.marks, start=1):
            same_images = [item.key for item in self.images[: mark.images]] == list(keys[: mark.images])
            if not (same_images and self.tokens.ids[: mark.tokens] == tuple(target[: mark.tokens])):
                break
            keep = index
        length = self.cut(keep)
        return length, self.marks[-1].images if self.marks else 0


def segment_marks(
    prompts: PromptBuilder, history: Sequence[Message], pending: Sequence[int], image_grids: Sequence[ImageGrid]
) -> list[Segment] | None:
    """(images, tokens to read from the base) for each segment of a read-ahead: one per image
    where the template's prefixes nest (each image's run just adds to the last), else one for
    all; None if the template does not show where the question's text goes."""
    marks: list[Segment] = []
    for n in range(1, len(image_grids) + 1):
        prefix = prompts.encode_turn_prefix(history, image_grids[:n])
        if prefix is None:
            return None
        tokens = Tokens.text(pending) + prefix
        if marks and tokens.ids[: len(marks[-1][1])] != marks[-1][1].ids:
            whole = prompts.encode_turn_prefix(history, image_grids)
            return None if whole is None else [(len(image_grids), Tokens.text(pending) + whole)]
        marks.append((n, tokens))
    return marks
