"""Tokens carry where each image's run lies, through joins and cuts, so nothing searches for it."""

from __future__ import annotations

import pytest

from engine.errors import EngineError
from engine.tokens import ImageGrid, ImageRun, Tokens

PAD = 9


def run(start: int, count: int) -> ImageRun:
    """An image of `count` tokens in one row at `start`."""
    return ImageRun(start, ImageGrid((1, 2, 2 * count), 2))


def test_joining_moves_the_runs_and_cutting_keeps_them_whole():
    pending = Tokens.text([1, 2])
    turn = Tokens((3, PAD, PAD, PAD, 4, 5, PAD, PAD, 6), (run(1, 3), run(6, 2)))
    joined = pending + turn
    assert joined.images == (run(3, 3), run(8, 2))
    assert [joined.ids[i] for i in joined.image_rows()] == [PAD] * 5
    rest = joined.after(6)  # after the first image: only the second is left
    assert rest.images == (run(2, 2),) and rest.ids == (4, 5, PAD, PAD, 6)
    head = joined.before(6)
    assert head.images == (run(3, 3),) and len(head) == 6


@pytest.mark.parametrize("cut", ["after", "before"])
def test_a_cut_through_an_image_is_refused(cut):
    tokens = Tokens((1, PAD, PAD, 2), (run(1, 2),))
    with pytest.raises(EngineError, match="cut an image"):
        getattr(tokens, cut)(2)
