"""The decode loop: sample a token, feed it to the cache, repeat. One loop for the app's
conversations and the local server, so a fix to stopping or feeding lands in both."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from .positions import PositionState, decode_positions
from .sampling import Sampler


class Decoding:
    """Iterate to get the answer's tokens one by one (an end-of-sequence token is not yielded).

    Each token is fed to the bound cache only when the next one is asked for, so a caller that
    stops iterating (a stop sequence, a client gone) leaves it unfed. Afterwards: `generated`
    (all sampled tokens, EOS included), `fed` (how many of them the cache holds), `stop`
    ("eos", "max_new_tokens", "context_full", "cancelled", or "stopped" by the caller),
    `positions` (after the fed tokens) and `first_token_at`."""

    def __init__(
        self,
        decoder,
        sampler: Sampler,
        logits: np.ndarray,
        positions: PositionState,
        eos_ids: frozenset[int],
        max_new_tokens: int,
        context_limit: int,
        reserve: int,
        should_stop: Callable[[], bool],
    ):
        """`reserve`: cache slots that must stay free after a token is fed (the caller may
        still need them, e.g. for the end-of-turn token)."""
        self.decoder, self.sampler, self.logits = decoder, sampler, logits
        self.positions, self.eos_ids = positions, eos_ids
        self.max_new_tokens, self.context_limit, self.reserve = max_new_tokens, context_limit, reserve
        self.should_stop = should_stop
        self.generated: list[int] = []
        self.fed = 0
        self.stop = "stopped"
        self.first_token_at: float | None = None

    def __iter__(self) -> Iterator[int]:
        while len(self.generated) < self.max_new_tokens:
            if self.should_stop():
                self.stop = "cancelled"
                return
            token = self.sampler.next_token(self.logits, self.generated)
            self.generated.append(token)
            self.first_token_at = self.first_token_at or time.perf_counter()
            if token in self.eos_ids:
                self.stop = "eos"
                return
            yield token
            if len(self.generated) >= self.max_new_tokens:
                break
            if self.decoder.length + 1 + self.reserve > self.context_limit:
                self.stop = "context_full"
                return
            pos, self.positions = decode_positions(self.positions)
            self.logits = self.decoder.forward(np.array([token]), pos)[-1]
            self.fed = len(self.generated)
        self.stop = "max_new_tokens"

    def tokens_per_second(self, now: float) -> float:
        """Decode speed after the first token (which comes from the prompt's logits)."""
        steps = max(len(self.generated) - 1, 0)
        return steps / (now - self.first_token_at) if steps and self.first_token_at else 0.0
