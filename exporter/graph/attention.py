"""The decoder's attention over its KV cache, from standard matmuls: each cached head read once.

The cache of a layer is time-major, [tokens, kv_heads, head_dim], so the tokens cached so far are
one contiguous prefix the engine binds as `past_key_values.{i}.*` without copying, and the chunk's
own keys and values are outputs (`new_key_values.{i}.*`) the engine binds straight onto the next
rows. The query heads of a group become the rows of one matrix product per KV head
(FusedMatMul reads the time-major cache through its batch transpose, without a copy), so a cached
head is read once per step, not once per query head as onnxruntime's CPU GroupQueryAttention
reads it, which also converts an fp16 cache to fp32 for every query head (measured in README.md,
"Attention over the cache").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .builder import FLOAT, GraphBuilder


@dataclass(frozen=True)
class ChunkShape:
    """Values every layer's attention shares: how many tokens are cached and how many are new
    ([past, new], to split the scores), and the causal mask among the new ones [new*group, new]."""

    lengths: str
    mask: str


def chunk_shape(g: GraphBuilder, past_key: str, new_tokens: str, group: int) -> ChunkShape:
    """`past_key`: a cache input [past, kv_heads, head_dim]; `new_tokens`: any value whose axis 1
    counts the chunk's tokens (input_ids [1, S]). Query rows are ordered (token, head in group)."""
    past = g.op("Shape", past_key, start=0, end=1)
    new = g.op("Shape", new_tokens, start=1, end=2)
    count = g.op("Squeeze", new, g.const([0]))
    rows = g.op("Range", g.const(0), g.op("Mul", count, g.const(group)), g.const(1))
    row_token = g.op("Div", rows, g.const(group))
    cols = g.op("Range", g.const(0), count, g.const(1))
    future = g.op("Greater", g.op("Unsqueeze", cols, g.const([0])), g.op("Unsqueeze", row_token, g.const([1])))
    mask = g.op("Where", future, g.const(-np.inf, np.float32), g.const(0.0, np.float32))
    return ChunkShape(g.op("Concat", past, new, axis=0), mask)


def _cache_rows(g: GraphBuilder, x: str, name: str, kv_heads: int, head_dim: int, kv_type: int) -> str:
    """The chunk's keys or values [1, S, kv_heads*head_dim] as cache rows: written to output
    `name` in the cache's type, and returned in fp32 as they will be read back (an fp16 cache
    rounds them: the chunk attends to what later tokens will see, so chunking changes nothing)."""
    if kv_type == FLOAT:
        return g.op("Reshape", x, g.const([-1, kv_heads, head_dim]), outputs=[name])
    stored = g.op("Cast", g.op("Reshape", x, g.const([-1, kv_heads, head_dim])), to=kv_type, outputs=[name])
    return g.op("Cast", stored, to=FLOAT)


def cached_attention(
    g: GraphBuilder,
    qkv: tuple[str, str, str],
    i: int,
    heads: tuple[int, int, int],
    chunk: ChunkShape,
    kv_type: int,
) -> str:
    """Causal attention of layer `i`'s chunk (q, k, v [1, S, heads*head_dim], rotated) over the
    `past_key_values.{i}.*` it is given and itself; writes `new_key_values.{i}.*`. heads: query
    heads, KV heads, head size. Returns [1, S, query_heads*head_dim] in fp32."""
    num_heads, kv_heads, head_dim = heads
    group = num_heads // kv_heads
    q, k, v = qkv
    new_k = _cache_rows(g, k, f"new_key_values.{i}.key", kv_heads, head_dim, kv_type)
    new_v = _cache_rows(g, v, f"new_key_values.{i}.value", kv_heads, head_dim, kv_type)
    past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
    if kv_type != FLOAT:
        past_k, past_v = (g.op("Cast", x, to=FLOAT) for x in (past_k, past_v))
    # [1, S, heads*hd] -> [kv_heads, S*group, hd]: a group's query heads are rows against its KV head
    q = g.op("Reshape", q, g.const([-1, kv_heads, group, head_dim]))
    q = g.op("Reshape", g.op("Transpose", q, perm=[1, 0, 2, 3]), g.const([kv_heads, -1, head_dim]))
    scale = float(head_dim**-0.5)
    scores_past = g.ms("FusedMatMul", q, past_k, alpha=scale, transB=1, transBatchB=1)
    scores_new = g.ms("FusedMatMul", q, new_k, alpha=scale, transB=1, transBatchB=1)
    scores_new = g.op("Add", scores_new, chunk.mask)
    probs = g.op("Softmax", g.op("Concat", scores_past, scores_new, axis=-1), axis=-1)
    probs_past, probs_new = g.op("Split", probs, chunk.lengths, axis=-1, outputs=2)
    out = g.op(
        "Add",
        g.ms("FusedMatMul", probs_past, past_v, transBatchB=1),
        g.ms("FusedMatMul", probs_new, new_v, transBatchB=1),
    )  # [kv_heads, S*group, hd]
    out = g.op("Transpose", g.op("Reshape", out, g.const([kv_heads, -1, group, head_dim])), perm=[1, 0, 2, 3])
    return g.op("Reshape", out, g.const([1, -1, num_heads * head_dim]))
