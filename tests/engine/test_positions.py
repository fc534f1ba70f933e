"""engine.positions against transformers' Qwen3VLModel.get_rope_index on the tiny reference model.

Our positions come from the tokens' image runs; transformers' from the same ids and grids."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.positions import PositionState, decode_positions, token_positions
from engine.tokens import ImageGrid, ImageRun, Tokens

IMAGE = 151655
VISION_START, VISION_END = 151652, 151653
IM_START, IM_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 198, 872, 77091


def text(ids) -> Tokens:
    return Tokens.text(ids)


def image(grid) -> Tokens:
    run = ImageRun(0, ImageGrid(grid, 2))
    return Tokens((IMAGE,) * run.count, (run,))


def user_turn(text_ids, grids=()) -> Tokens:
    tokens = text([IM_START, USER, NEWLINE])
    for grid in grids:
        tokens = tokens + text([VISION_START]) + image(grid) + text([VISION_END])
    return tokens + text([*text_ids, IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE])


def reference(model, tokens: Tokens):
    import torch

    input_ids = torch.tensor([tokens.ids])
    grids = [run.grid.thw for run in tokens.images]
    positions, delta = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=(input_ids == IMAGE).int(),
        image_grid_thw=torch.tensor(grids) if grids else None,
    )
    return positions[:, 0].numpy(), int(delta.reshape(-1)[0])


def check(model, tokens: Tokens):
    positions, state = token_positions(tokens)
    expected, expected_delta = reference(model, tokens)
    assert positions.shape == (3, len(tokens))
    np.testing.assert_array_equal(positions, expected)
    assert state.rope_delta == expected_delta
    return positions, state.rope_delta


def test_text_only_is_plain_1d(reference_model):
    tokens = user_turn([9707, 1879, 0])
    positions, delta = check(reference_model, tokens)
    np.testing.assert_array_equal(positions, np.tile(np.arange(len(tokens)), (3, 1)))
    assert delta == 0


def test_one_image(reference_model):
    tokens = user_turn([74785, 419, 2168, 13], grids=[(1, 14, 20)])
    positions, delta = check(reference_model, tokens)
    # Reference, section 4: 70 image tokens in an 84-token prompt give rope_delta -60.
    assert len(tokens) == 84 and delta == -60
    first = tokens.ids.index(IMAGE)
    assert positions[:, first].tolist() == [first] * 3
    assert positions[:, first + 69].tolist() == [first, first + 6, first + 9]  # last row, last col
    assert positions[0, first + 70] == first + 10  # vision_end continues at start + max(7, 10)


def test_two_images_of_different_grids(reference_model):
    grids = [(1, 14, 20), (1, 26, 6)]
    check(reference_model, user_turn([27, 91, 318], grids=grids))


def test_sequence_ending_in_an_image(reference_model):
    check(reference_model, text([IM_START, USER, NEWLINE, VISION_START]) + image((1, 8, 8)))


def test_turns_with_cache_equal_the_full_history(reference_model):
    """Prefill turn 1 (image), decode an answer, prefill turn 2 (new image), decode again:
    the concatenated chunks equal transformers' positions for the whole history."""
    grids = [(1, 16, 12), (1, 10, 22)]
    turn1 = user_turn([3838, 374, 419, 30], grids=grids[:1])
    answer1 = text([32, 8251, 8251, 13, IM_END])
    turn2 = text([NEWLINE]) + user_turn([3555, 911], grids=grids[1:])
    answer2 = text([9454, 13])

    state = PositionState()
    parts = []
    p, state = token_positions(turn1, state)
    parts.append(p)
    for _ in answer1.ids:
        p, state = decode_positions(state)
        parts.append(p)
    p, state = token_positions(turn2, state)
    parts.append(p)
    p, state = decode_positions(state, count=len(answer2))
    parts.append(p)

    full = turn1 + answer1 + turn2 + answer2
    expected, expected_delta = check(reference_model, full)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), expected)
    assert state.length == len(full)
    assert state.rope_delta == expected_delta
    # transformers' decode rule: token at absolute index i gets i + rope_delta
    assert state.next_pos == len(full) + expected_delta


def test_a_grid_that_does_not_merge_into_whole_tokens_is_refused():
    with pytest.raises(EngineError, match="does not split into 2-patch tokens"):
        ImageGrid((1, 4, 5), 2)


def test_adjacent_images_are_split_by_their_runs():
    """Two images with no text between them: each run keeps its own grid (transformers would
    merge them, but the chat template always puts vision_start/end around an image)."""
    positions, _ = token_positions(image((1, 4, 4)) + image((1, 4, 6)))
    assert positions[:, 4].tolist() == [2, 2, 2]  # second image starts after max(2, 2)
    assert positions[:, -1].tolist() == [2, 3, 4]  # its last row and column
