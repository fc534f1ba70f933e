"""Several KV caches on one decoder: each keeps its own tokens while the others are used."""

from __future__ import annotations

import numpy as np

from engine.engine import Engine
from engine.positions import decode_positions, token_positions
from engine.tokens import Tokens


def test_a_conversation_continues_exactly_after_another_cache_was_written(tiny_fp32):
    engine = Engine(tiny_fp32)
    decoder = engine.decoder
    first = engine.prompts.encode("The first conversation talks about the sea")
    second = engine.prompts.encode("A second one is about mountains, snow, ice and the long way up")

    def prefill(ids):
        positions, state = token_positions(Tokens.text(ids))
        return decoder.prefill(np.asarray(ids), positions)[-1], state

    def step(state, token):
        pos, state = decode_positions(state)
        return decoder.forward(np.array([token]), pos)[-1], state

    alone, state = prefill(first)  # the default cache, nobody else around
    alone_next, _ = step(state, 42)

    cache_a, cache_b = decoder.new_cache(), decoder.new_cache()
    decoder.bind(cache_a)
    logits_a, state_a = prefill(first)
    decoder.bind(cache_b)  # another conversation writes the same slot positions, in its own cache
    _, state_b = prefill(second)
    step(state_b, 7)
    decoder.bind(cache_a)
    next_a, _ = step(state_a, 42)

    np.testing.assert_allclose(logits_a, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(next_a, alone_next, rtol=1e-5, atol=1e-5)
    assert (cache_a.length, cache_b.length) == (len(first) + 1, len(second) + 1)
    decoder.bind(cache_b)
    decoder.reset(3)
    assert (cache_a.length, cache_b.length, decoder.default_cache.length) == (len(first) + 1, 3, len(first) + 1)
