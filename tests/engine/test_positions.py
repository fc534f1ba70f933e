"""engine.positions against transformers' Qwen3VLModel.get_rope_index on the tiny reference model."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.positions import PositionState, chunk_positions, decode_positions, get_rope_index

IMAGE = 151655
VISION_START, VISION_END = 151652, 151653
IM_START, IM_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 198, 872, 77091


def image_block(grid) -> list[int]:
    t, gh, gw = grid
    return [VISION_START] + [IMAGE] * (t * gh * gw // 4) + [VISION_END]


def user_turn(text_ids, grids=()) -> list[int]:
    ids = [IM_START, USER, NEWLINE]
    for grid in grids:
        ids += image_block(grid)
    return ids + list(text_ids) + [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE]


def reference(model, ids, grids):
    import torch

    input_ids = torch.tensor([ids])
    positions, delta = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=(input_ids == IMAGE).int(),
        image_grid_thw=torch.tensor(grids) if grids else None,
    )
    return positions[:, 0].numpy(), int(delta.reshape(-1)[0])


def check(model, ids, grids):
    positions, delta = get_rope_index(ids, grids, IMAGE)
    expected, expected_delta = reference(model, ids, grids)
    assert positions.shape == (3, len(ids))
    np.testing.assert_array_equal(positions, expected)
    assert delta == expected_delta
    return positions, delta


def test_text_only_is_plain_1d(reference_model):
    ids = user_turn([9707, 1879, 0])
    positions, delta = check(reference_model, ids, [])
    np.testing.assert_array_equal(positions, np.tile(np.arange(len(ids)), (3, 1)))
    assert delta == 0


def test_one_image(reference_model):
    ids = user_turn([74785, 419, 2168, 13], grids=[(1, 14, 20)])
    positions, delta = check(reference_model, ids, [(1, 14, 20)])
    # Reference, section 4: 70 image tokens in an 84-token prompt give rope_delta -60.
    assert len(ids) == 84 and delta == -60
    first = ids.index(IMAGE)
    assert positions[:, first].tolist() == [first] * 3
    assert positions[:, first + 69].tolist() == [first, first + 6, first + 9]  # last row, last col
    assert positions[0, first + 70] == first + 10  # vision_end continues at start + max(7, 10)


def test_two_images_of_different_grids(reference_model):
    grids = [(1, 14, 20), (1, 26, 6)]
    ids = user_turn([27, 91, 318], grids=grids)
    check(reference_model, ids, grids)


def test_sequence_ending_in_an_image(reference_model):
    ids = [IM_START, USER, NEWLINE, VISION_START] + [IMAGE] * 16
    check(reference_model, ids, [(1, 8, 8)])


def test_turns_with_cache_equal_the_full_history(reference_model):
    """Prefill turn 1 (image), decode an answer, prefill turn 2 (new image), decode again:
    the concatenated chunks equal transformers' positions for the whole history."""
    grids = [(1, 16, 12), (1, 10, 22)]
    turn1 = user_turn([3838, 374, 419, 30], grids=grids[:1])
    answer1 = [32, 8251, 8251, 13, IM_END]
    turn2 = [NEWLINE] + user_turn([3555, 911], grids=grids[1:])
    answer2 = [9454, 13]

    state = PositionState()
    parts = []
    p, state = chunk_positions(turn1, grids[:1], IMAGE, state)
    parts.append(p)
    for _ in answer1:
        p, state = decode_positions(state)
        parts.append(p)
    p, state = chunk_positions(turn2, grids[1:], IMAGE, state)
    parts.append(p)
    p, state = decode_positions(state, count=len(answer2))
    parts.append(p)

    full = turn1 + answer1 + turn2 + answer2
    expected, expected_delta = check(reference_model, full, grids)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), expected)
    assert state.length == len(full)
    assert state.rope_delta == expected_delta
    # transformers' decode rule: token at absolute index i gets i + rope_delta
    assert state.next_pos == len(full) + expected_delta


def test_token_and_grid_mismatches_are_errors():
    ids = user_turn([1, 2], grids=[(1, 4, 4)])
    with pytest.raises(EngineError, match="only 0 image"):
        chunk_positions(ids, [], IMAGE)
    with pytest.raises(EngineError, match="needs 16 image tokens"):
        chunk_positions(ids, [(1, 8, 8)], IMAGE)
    with pytest.raises(EngineError, match="2 image\\(s\\) were given but the tokens hold 1"):
        chunk_positions(ids, [(1, 4, 4), (1, 4, 4)], IMAGE)


def test_adjacent_images_are_split_by_their_grids():
    """Two images with no text between them: each gets its own grid (transformers would merge
    the run, but the chat template always puts vision_start/end around an image)."""
    ids = [IMAGE] * 4 + [IMAGE] * 6
    positions, _ = get_rope_index(ids, [(1, 4, 4), (1, 4, 6)], IMAGE)
    assert positions[:, 4].tolist() == [2, 2, 2]  # second image starts after max(2, 2)
