"""A read encodes the images whose runs its tokens hold: any other images are refused before any work."""

from __future__ import annotations

import pytest

from engine.errors import EngineError
from engine.positions import PositionState
from engine.reading import ImageInput, Reader
from engine.tokens import ImageGrid, ImageRun, Tokens


def test_images_that_are_not_the_tokens_runs_are_refused():
    grid = ImageGrid((1, 4, 4), 2)
    tokens = Tokens((1, 9, 9, 9, 9, 2), (ImageRun(1, grid),))
    image = ImageInput("a.png", "a", None, grid)
    other = ImageInput("b.png", "b", None, ImageGrid((1, 4, 8), 2))
    reader = Reader(None, should_stop=lambda: False)  # refused before the model is needed
    for images in ([], [other], [image, image]):
        with pytest.raises(EngineError, match="not the 1 the tokens hold"):
            next(reader.read(tokens, images, PositionState()))
