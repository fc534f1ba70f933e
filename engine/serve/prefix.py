"""Prefix reuse: a few KV caches ("slots") of recent conversations, and how much of each to keep.

A follow-up request repeats the history its slot already holds; truncating the cache to the
longest common prefix of keys (token ids, image hashes) and reading only the rest gives the
same result as reading everything, because a token's keys and values depend only on the tokens
(and images) before it and on its position, and positions are a function of that same prefix.
The cache holds the tokens the model generated; a client's resent answer is re-tokenized by the
chat template, so only what is token-identical is reused. A cache's memory is committed only as
it fills (engine.memory), so an idle slot costs what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.runtime import KVCache

from .prompt import Key, Prompt


@dataclass
class Slot:
    cache: KVCache | None  # made when the slot is first used
    keys: list[Key] = field(default_factory=list)  # one per token in the cache, always len == cache.length
    prompt_length: int = 0  # tokens of the last prompt read into it (the rest is its answer)
    last_used: int = 0

    def truncate(self, length: int) -> None:
        self.cache.reset(length)
        del self.keys[length:]


def common_prefix(a: Sequence[Key], b: Sequence[Key]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable(cached: Sequence[Key], prompt: Prompt) -> int:
    """Tokens of `prompt` the cache can keep: the common prefix, leaving at least the prompt's last
    token to read (its logits start the answer), and never ending inside an image."""
    keep = min(common_prefix(cached, prompt.keys), len(prompt.keys) - 1)
    for run in prompt.tokens.images:
        if run.start < keep < run.end:
            return run.start
    return max(keep, 0)


class SlotPool:
    """`count` caches; a request goes to the slot sharing most of its prefix, unless that is less
    than half of the slot's last prompt: then it is another conversation (sharing a system prompt,
    say) worth keeping, and the least recently used slot is taken instead."""

    def __init__(self, new_cache, count: int):
        if count < 1:
            raise ValueError("the server needs at least one cache slot")
        self.slots = [Slot(None) for _ in range(count)]
        self._new_cache = new_cache
        self._clock = 0

    def choose(self, prompt: Prompt) -> tuple[Slot, int]:
        """The slot to answer `prompt` in and how many of its tokens to keep."""
        self._clock += 1
        scored = [(reusable(s.keys, prompt), s) for s in self.slots]
        keep, slot = max(scored, key=lambda pair: (pair[0], pair[1].last_used))
        if keep * 2 < slot.prompt_length:
            slot = min(self.slots, key=lambda s: s.last_used)
            keep = reusable(slot.keys, prompt)
        slot.last_used = self._clock
        if slot.cache is None:
            slot.cache = self._new_cache()
        return slot, keep
