"""3-D MRoPE position ids (temporal, height, width) for one Qwen3-VL sequence, turn after turn.

Text tokens get the same position on all three axes and advance it by one. The tokens of an
image get (start + t, start + row, start + col) over its merged grid, and the text after it
continues from start + max(gh, gw) / merge_size, not from start + token count. So the position
of the next token is not its index in the sequence; `PositionState` carries it between chunks
(prefill of a turn, then one decode step at a time, then the next turn) so the KV cache of
earlier turns stays valid. Matches transformers' Qwen3VLModel.get_rope_index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.tokens import ImageGrid, Tokens


@dataclass(frozen=True)
class PositionState:
    """Where a sequence stands after the tokens seen so far."""

    next_pos: int = 0  # position (on all three axes) the next text token gets
    length: int = 0  # tokens seen so far, i.e. the index of the next token

    @property
    def rope_delta(self) -> int:
        """transformers' rope_deltas: max position + 1 - sequence length (usually negative)."""
        return self.next_pos - self.length


def image_positions(start: int, grid: ImageGrid) -> np.ndarray:
    """[3, tokens] positions of one image's tokens in row-major (t, row, col) order."""
    tt, hh, ww = np.meshgrid(np.arange(grid.thw[0]), np.arange(grid.rows), np.arange(grid.cols), indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1).astype(np.int64) + start


def token_positions(tokens: Tokens, state: PositionState = PositionState()) -> tuple[np.ndarray, PositionState]:
    """Positions [3, L] (int64) for the next `tokens` and the state after them."""
    length = len(tokens)
    out = np.empty((3, length), dtype=np.int64)
    cur, i = state.next_pos, 0
    for run in tokens.images:
        out[:, i : run.start] = cur + np.arange(run.start - i)  # the text before it
        cur += run.start - i
        out[:, run.start : run.end] = image_positions(cur, run.grid)
        cur += max(run.grid.rows, run.grid.cols)
        i = run.end
    out[:, i:] = cur + np.arange(length - i)
    cur += length - i
    return out, PositionState(next_pos=cur, length=state.length + length)


def decode_positions(state: PositionState, count: int = 1) -> tuple[np.ndarray, PositionState]:
    """Positions [3, count] for generated text tokens: index + rope_delta on every axis."""
    steps = state.next_pos + np.arange(count, dtype=np.int64)
    after = PositionState(state.next_pos + count, state.length + count)
    return np.repeat(steps[None, :], 3, axis=0), after
