"""Token ids and where each image's tokens lie among them, with each image's grid, as one value.

The prompt builder finds the image runs once, where it expands each image slot to the image's
tokens; positions, encoding and prefill take them from here instead of searching the ids for
the image token again (as llama.cpp's mtmd passes input chunks along).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .errors import EngineError


@dataclass(frozen=True)
class ImageGrid:
    """An image's patch grid (t, h, w), as the image processor cuts it, and how many patches per
    side one token merges: all that decides how many tokens the image takes and their positions."""

    thw: tuple[int, int, int]
    merge_size: int

    def __post_init__(self):
        _, h, w = self.thw
        if h % self.merge_size or w % self.merge_size:
            raise EngineError(f"Image grid {self.thw} does not split into {self.merge_size}-patch tokens.")

    @property
    def rows(self) -> int:
        return self.thw[1] // self.merge_size

    @property
    def cols(self) -> int:
        return self.thw[2] // self.merge_size

    @property
    def tokens(self) -> int:
        return self.thw[0] * self.rows * self.cols


@dataclass(frozen=True)
class ImageRun:
    """One image's tokens in a sequence: where they start and the grid they stand for."""

    start: int  # index of the image's first token
    grid: ImageGrid

    @property
    def count(self) -> int:
        return self.grid.tokens

    @property
    def end(self) -> int:
        return self.start + self.count

    def moved(self, by: int) -> ImageRun:
        return replace(self, start=self.start + by)


@dataclass(frozen=True)
class Tokens:
    ids: tuple[int, ...]
    images: tuple[ImageRun, ...] = ()  # in image order

    @classmethod
    def text(cls, ids: Sequence[int]) -> Tokens:
        """Tokens with no image in them (the pending tail of an answer, a plain prompt)."""
        return cls(tuple(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: Tokens) -> Tokens:
        shift = len(self.ids)
        return Tokens(self.ids + other.ids, self.images + tuple(run.moved(shift) for run in other.images))

    def after(self, start: int) -> Tokens:
        """The tokens from `start` on; an image run may not be cut."""
        return self._slice(start, len(self.ids))

    def before(self, end: int) -> Tokens:
        """The first `end` tokens; an image run may not be cut."""
        return self._slice(0, end)

    def image_rows(self) -> list[int]:
        """The index of every image token, image after image."""
        return [i for run in self.images for i in range(run.start, run.end)]

    def _slice(self, start: int, end: int) -> Tokens:
        runs = []
        for run in self.images:
            if run.end <= start or run.start >= end:
                continue
            if run.start < start or run.end > end:
                raise EngineError(f"Tokens {start}..{end} would cut an image's tokens ({run.start}..{run.end}).")
            runs.append(run.moved(-start))
        return Tokens(self.ids[start:end], tuple(runs))
