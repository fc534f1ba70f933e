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
from engine.tokens import ImageRun, Tokens

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


def token_positions(
    tokens: Tokens,
    image_grids: Sequence[Grid],
    state: PositionState = PositionState(),
    spatial_merge_size: int = 2,
) -> tuple[np.ndarray, PositionState]:
    """Positions [3, L] (int64) for the next `tokens` and the state after them; `image_grids`
    are the grids of the images whose runs `tokens` holds, in order."""
    if len(image_grids) != len(tokens.images):
        raise EngineError(f"{len(image_grids)} image(s) were given but the tokens hold {len(tokens.images)}.")
    length = len(tokens)
    out = np.empty((3, length), dtype=np.int64)
    cur, i = state.next_pos, 0
    for number, (run, grid) in enumerate(zip(tokens.images, image_grids), start=1):
        count = image_token_count(grid, spatial_merge_size)
        if run.count != count:
            raise EngineError(f"Image {number} (grid {tuple(grid)}) needs {count} image tokens at index {run.start}.")
        out[:, i : run.start] = cur + np.arange(run.start - i)  # the text before it
        cur += run.start - i
        out[:, run.start : run.end] = image_positions(cur, grid, spatial_merge_size)
        cur += max(int(grid[1]), int(grid[2])) // spatial_merge_size
        i = run.end
    out[:, i:] = cur + np.arange(length - i)
    cur += length - i
    return out, PositionState(next_pos=cur, length=state.length + length)


def chunk_positions(
    token_ids: Sequence[int] | np.ndarray,
    image_grids: Sequence[Grid],
    image_token_id: int,
    state: PositionState = PositionState(),
    spatial_merge_size: int = 2,
) -> tuple[np.ndarray, PositionState]:
    """token_positions() for bare ids, as transformers takes them: each image's tokens are the
    next unbroken run of `image_token_id`, as long as its grid says."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    image_starts = np.flatnonzero(ids == image_token_id)
    grids = list(image_grids)
    runs, i = [], 0
    while True:
        k = int(np.searchsorted(image_starts, i))
        if k == len(image_starts):
            break
        start = int(image_starts[k])
        if len(runs) == len(grids):
            raise EngineError(f"Image tokens at index {start} but only {len(grids)} image(s) were given.")
        grid = grids[len(runs)]
        count = image_token_count(grid, spatial_merge_size)
        if start + count > len(ids) or not np.all(ids[start : start + count] == image_token_id):
            raise EngineError(
                f"Image {len(runs) + 1} (grid {tuple(grid)}) needs {count} image tokens at index {start}."
            )
        runs.append(ImageRun(start, count))
        i = start + count
    return token_positions(Tokens(tuple(int(t) for t in ids), tuple(runs)), grids, state, spatial_merge_size)


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
