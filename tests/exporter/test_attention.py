"""The decoder's attention graph against causal attention written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kernel_probe import probe_session
from exporter.graph.attention import cached_attention, chunk_shape
from exporter.graph.builder import FLOAT, FLOAT16, GraphBuilder

HEADS, KV_HEADS, HEAD_DIM = 6, 2, 8  # three query heads per KV head


def _session(kv_type: int):
    g = GraphBuilder("attention")
    q = g.input("q", FLOAT, [1, "S", HEADS * HEAD_DIM])
    k = g.input("k", FLOAT, [1, "S", KV_HEADS * HEAD_DIM])
    v = g.input("v", FLOAT, [1, "S", KV_HEADS * HEAD_DIM])
    for kv in ("key", "value"):
        g.input(f"past_key_values.0.{kv}", kv_type, ["T", KV_HEADS, HEAD_DIM])
    chunk = chunk_shape(g, "past_key_values.0.key", k, HEADS // KV_HEADS)
    out = cached_attention(g, (q, k, v), 0, (HEADS, KV_HEADS, HEAD_DIM), chunk, kv_type)
    g.output(out, "out", FLOAT, [1, "S", HEADS * HEAD_DIM])
    for kv in ("key", "value"):
        g.output(f"new_key_values.0.{kv}", f"new_key_values.0.{kv}", kv_type, ["S", KV_HEADS, HEAD_DIM])
    return probe_session(g.graph(), threads=1)


def _reference(q, past_k, past_v, new_k, new_v):
    """Causal attention of S new tokens after T cached ones; query head h uses KV head h // group."""
    s, t = len(new_k), len(past_k)
    keys = np.concatenate([past_k, new_k]).astype(np.float64)  # [T+S, kv, hd]
    values = np.concatenate([past_v, new_v]).astype(np.float64)
    queries = q.reshape(s, HEADS, HEAD_DIM).astype(np.float64)
    out = np.zeros((s, HEADS, HEAD_DIM))
    for i in range(s):
        for h in range(HEADS):
            kv = h // (HEADS // KV_HEADS)
            visible = t + i + 1
            scores = keys[:visible, kv] @ queries[i, h] / np.sqrt(HEAD_DIM)
            weights = np.exp(scores - scores.max())
            out[i, h] = weights / weights.sum() @ values[:visible, kv]
    return out.reshape(1, s, HEADS * HEAD_DIM)


@pytest.mark.parametrize("past", [0, 5])
@pytest.mark.parametrize("kv_type, dtype", [(FLOAT, np.float32), (FLOAT16, np.float16)])
def test_a_chunk_attends_to_the_cache_and_causally_to_itself(past, kv_type, dtype):
    rng = np.random.default_rng(past)
    s = 4
    q = rng.standard_normal((1, s, HEADS * HEAD_DIM)).astype(np.float32) * 2
    k = rng.standard_normal((1, s, KV_HEADS * HEAD_DIM)).astype(np.float32) * 2
    v = rng.standard_normal((1, s, KV_HEADS * HEAD_DIM)).astype(np.float32)
    past_k = rng.standard_normal((past, KV_HEADS, HEAD_DIM)).astype(dtype)
    past_v = rng.standard_normal((past, KV_HEADS, HEAD_DIM)).astype(dtype)
    feeds = {"q": q, "k": k, "v": v, "past_key_values.0.key": past_k, "past_key_values.0.value": past_v}
    out, new_k, new_v = _session(kv_type).run(None, feeds)

    # The chunk's rows as the cache stores them (an fp16 cache rounds them), and attention over
    # exactly those values: the same as reading them back from the cache in a later chunk.
    assert new_k.dtype == dtype and new_k.shape == (s, KV_HEADS, HEAD_DIM)
    np.testing.assert_array_equal(new_k, k.reshape(s, KV_HEADS, HEAD_DIM).astype(dtype))
    np.testing.assert_array_equal(new_v, v.reshape(s, KV_HEADS, HEAD_DIM).astype(dtype))
    expected = _reference(q, past_k, past_v, new_k, new_v)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)


def test_one_chunk_equals_its_tokens_one_by_one():
    """Prefill in one chunk or decode token by token: the same outputs (what the KV cache is for)."""
    rng = np.random.default_rng(7)
    s = 5
    q = rng.standard_normal((1, s, HEADS * HEAD_DIM)).astype(np.float32)
    k = rng.standard_normal((1, s, KV_HEADS * HEAD_DIM)).astype(np.float32)
    v = rng.standard_normal((1, s, KV_HEADS * HEAD_DIM)).astype(np.float32)
    session = _session(FLOAT16)
    empty = np.zeros((0, KV_HEADS, HEAD_DIM), np.float16)
    whole = session.run(
        None, {"q": q, "k": k, "v": v, "past_key_values.0.key": empty, "past_key_values.0.value": empty}
    )
    cache_k, cache_v, rows = empty, empty, []
    for i in range(s):
        one = {"q": q[:, i : i + 1], "k": k[:, i : i + 1], "v": v[:, i : i + 1]}
        out, new_k, new_v = session.run(
            None, {**one, "past_key_values.0.key": cache_k, "past_key_values.0.value": cache_v}
        )
        cache_k, cache_v = np.concatenate([cache_k, new_k]), np.concatenate([cache_v, new_v])
        rows.append(out)
    np.testing.assert_allclose(np.concatenate(rows, axis=1), whole[0], atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(cache_k, whole[1])
