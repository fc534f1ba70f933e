"""3-D MRoPE position ids (temporal, height, width) for one Qwen3-VL sequence, turn after turn.

Text tokens get the same position on all three axes and advance it by one. The tokens of an
image get (start + t, start + row, start + col) over its merged grid, and the text after it
continues from start + max(gh, gw) / merge_size, not from start + token count. So the position
of the next token is not its index in the sequence; `PositionState` carries it between chunks
(prefill of a turn, then one decode step at a time, then the next turn) so the KV cache of
earlier turns stays valid. Matches transformers' Qwen3VLModel.get_rope_index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import EngineError

Grid = tuple[int, int, int]  # (t, gh, gw) in patches, as PreparedImage.grid_thw


@dataclass(frozen=True)
class PositionState:
    """Where a sequence stands after the tokens seen so far."""

    next_pos: int = 0  # position (on all three axes) the next text token gets
    length: int = 0  # tokens seen so far, i.e. the index of the next token

    @property
    def rope_delta(self) -> int:
        """transformers' rope_deltas: max position + 1 - sequence length (usually negative)."""
        return self.next_pos - self.length


def image_positions(start: int, grid: Grid, spatial_merge_size: int = 2) -> np.ndarray:
    """[3, t*H*W] positions of one image's tokens in row-major (t, h, w) order."""
    t, gh, gw = (int(v) for v in grid)
    llm_h, llm_w = gh // spatial_merge_size, gw // spatial_merge_size
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(llm_h), np.arange(llm_w), indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1).astype(np.int64) + start


def image_token_count(grid: Grid, spatial_merge_size: int = 2) -> int:
    t, gh, gw = (int(v) for v in grid)
    return t * gh * gw // spatial_merge_size**2


def chunk_positions(
    token_ids: Sequence[int] | np.ndarray,
    image_grids: Sequence[Grid],
    image_token_id: int,
    state: PositionState = PositionState(),
    spatial_merge_size: int = 2,
) -> tuple[np.ndarray, PositionState]:
    """Positions [3, L] (int64) for the next `token_ids` and the state after them.

    `image_grids` are the grids of the images whose tokens appear in this chunk, in order;
    each image's tokens must be one unbroken run of `image_token_id`.
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    length = ids.shape[0]
    out = np.empty((3, length), dtype=np.int64)
    image_starts = np.flatnonzero(ids == image_token_id)
    grids = list(image_grids)
    cur, i, used = state.next_pos, 0, 0
    while i < length:
        k = int(np.searchsorted(image_starts, i))
        next_image = int(image_starts[k]) if k < len(image_starts) else length
        if next_image > i:  # a run of text
            out[:, i:next_image] = cur + np.arange(next_image - i)
            cur += next_image - i
            i = next_image
            continue
        if used == len(grids):
            raise EngineError(f"Image tokens at index {i} but only {len(grids)} image(s) were given.")
        grid = grids[used]
        count = image_token_count(grid, spatial_merge_size)
        if i + count > length or not np.all(ids[i : i + count] == image_token_id):
            raise EngineError(f"Image {used + 1} (grid {tuple(grid)}) needs {count} image tokens at index {i}.")
        out[:, i : i + count] = image_positions(cur, grid, spatial_merge_size)
        cur += max(int(grid[1]), int(grid[2])) // spatial_merge_size
        i += count
        used += 1
    if used != len(grids):
        raise EngineError(f"{len(grids)} image(s) were given but the tokens hold {used}.")
    return out, PositionState(next_pos=cur, length=state.length + length)


def decode_positions(state: PositionState, count: int = 1) -> tuple[np.ndarray, PositionState]:
    """Positions [3, count] for generated text tokens: index + rope_delta on every axis."""
    steps = state.next_pos + np.arange(count, dtype=np.int64)
    after = PositionState(state.next_pos + count, state.length + count)
    return np.repeat(steps[None, :], 3, axis=0), after


def get_rope_index(
    token_ids: Sequence[int] | np.ndarray,
    image_grids: Sequence[Grid],
    image_token_id: int,
    spatial_merge_size: int = 2,
) -> tuple[np.ndarray, int]:
    """Whole-sequence positions [3, L] and rope_delta, like transformers for batch size 1."""
    positions, state = chunk_positions(token_ids, image_grids, image_token_id, PositionState(), spatial_merge_size)
    return positions, state.rope_delta
