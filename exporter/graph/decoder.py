"""The text decoder graph: embedding (tied with lm_head), 36 Qwen3 layers, DeepStack, logits.

Inputs
  input_ids [1, S] int64; position_ids [3, 1, S] int64 (t, h, w MRoPE positions)
  visual_embeds [M, H]: rows that replace the embeddings at `visual_pos` (image tokens in this chunk)
  visual_pos [M] int64; deepstack_embeds [levels, M, H]: added after decoder layers 0..levels-1
  logits_pos [P] int64: rows of this chunk whose logits are wanted (usually [-1]: the last one)
  past_key_values.{i}.key / .value [past, kv_heads, head_dim]: the tokens cached so far (time-major,
  so the engine binds a prefix of its preallocated buffer), float32 or float16 (`kv_dtype`: half
  the cache memory; attention converts it as it reads)
Outputs
  logits [1, P, vocab]; new_key_values.{i}.key / .value [S, kv_heads, head_dim]: this chunk's cache
  rows (the engine binds them onto the buffer's next rows, so nothing is copied; see attention.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..checkpoint import Checkpoint
from ..config import TextConfig
from ..quantize import quantize_blocks
from .attention import ChunkShape, cached_attention, chunk_shape
from .builder import FLOAT, FLOAT16, INT64, GraphBuilder
from .ops import WeightFormat, linear, rms_norm, rope_inverse_frequencies, silu_mul

T = "model.language_model"
KV_DTYPES = {"fp32": FLOAT, "fp16": FLOAT16}
EMBED = f"{T}.embed_tokens.weight"


def _mrope_cos_sin(g: GraphBuilder, cfg: TextConfig, position_ids: str) -> tuple[str, str]:
    """Interleaved MRoPE: frequency j takes its angle from axis h if j%3==1, w if j%3==2 (up to
    3*section), else t. Returns cos/sin [S, head_dim/2] for RotaryEmbedding (rotate_half layout)."""
    half = cfg.head_dim // 2
    inv = rope_inverse_frequencies(cfg.rope_theta, cfg.head_dim)
    axis_of = np.zeros(half, np.int64)
    for axis, offset in ((1, 1), (2, 2)):
        axis_of[offset : cfg.mrope_section[axis] * 3 : 3] = axis
    select = np.zeros((3, 1, 1, half), np.float32)
    select[axis_of, 0, 0, np.arange(half)] = 1.0
    pos = g.op("Unsqueeze", g.op("Cast", position_ids, to=FLOAT), g.const([3]))  # [3, 1, S, 1]
    freqs = g.op("Mul", pos, g.const(inv.astype(np.float32)[None, None, None, :], np.float32))
    angles = g.op("ReduceSum", g.op("Mul", freqs, g.const(select, np.float32)), g.const([0]), keepdims=0)
    angles = g.op("Squeeze", angles, g.const([0]))  # [S, half]
    return g.op("Cos", angles), g.op("Sin", angles)


def _embedding(g: GraphBuilder, ck: Checkpoint, cfg: TextConfig, fmt: WeightFormat, ids: str) -> tuple[str, callable]:
    """Token embeddings and a function that applies the tied lm_head, from one stored matrix."""
    table = ck.get(EMBED)
    v, h = table.shape
    if fmt.kind == "int4":
        q = quantize_blocks(table, fmt.block_size, 4)
        del table
        packed = g.weight(f"{T}.embed_tokens.qweight", q.packed)
        scales = g.weight(f"{T}.embed_tokens.scales", q.scales)
        zps = g.weight(f"{T}.embed_tokens.zero_points", q.zero_points)
        rows = g.weight_alias(f"{T}.embed_tokens.qweight_rows", packed, (v, h // 2))
        embeds = g.ms(
            "GatherBlockQuantized",
            rows,
            ids,
            scales,
            zps,
            bits=4,
            block_size=q.block_size,
            gather_axis=0,
            quantize_axis=1,
        )

        def lm_head(x: str) -> str:
            return g.ms(
                "MatMulNBits",
                x,
                packed,
                scales,
                zps,
                K=h,
                N=v,
                bits=4,
                block_size=q.block_size,
                accuracy_level=fmt.accuracy_level,
            )

        return embeds, lm_head
    weight = g.weight(EMBED, table)
    del table
    embeds = g.op("Gather", weight, ids, axis=0)

    def lm_head(x: str) -> str:
        flat = g.op("Reshape", x, g.const([-1, h]))
        logits = g.op("Gemm", flat, weight, transB=1)
        return g.op("Unsqueeze", logits, g.const([0]))

    return embeds, lm_head


@dataclass(frozen=True)
class LayerInputs:
    """Graph values every decoder layer reads, and how its weights and cache are stored."""

    cos: str  # rotary tables [S, head_dim/2]
    sin: str
    rot_pos: str  # [1, S] row index into cos/sin
    chunk: ChunkShape  # cached and new token counts, causal mask (shared by all layers)
    scatter_idx: str  # [M, 2] rows of the image tokens (for DeepStack)
    deepstack: str  # [levels, M, H]
    fmt: WeightFormat
    kv_type: int


def _attention(g, ck, cfg: TextConfig, i: int, y: str, inputs: LayerInputs) -> str:
    a = f"{T}.layers.{i}.self_attn"
    nq, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    fused = np.concatenate(
        [ck.get(f"{a}.q_proj.weight"), ck.get(f"{a}.k_proj.weight"), ck.get(f"{a}.v_proj.weight")], axis=0
    )
    qkv = linear(g, y, f"{a}.qkv_proj", fused, None, inputs.fmt)
    del fused
    q, k, v = g.op("Split", qkv, g.const([nq * hd, nkv * hd, nkv * hd]), outputs=3, axis=-1)

    def norm_rope(x: str, heads: int, which: str) -> str:
        x = g.op("Reshape", x, g.const([1, -1, heads, hd]))
        x = rms_norm(g, x, f"{a}.{which}_norm", ck.get(f"{a}.{which}_norm.weight"), cfg.rms_norm_eps)
        x = g.op("Reshape", x, g.const([1, -1, heads * hd]))
        return g.ms("RotaryEmbedding", x, inputs.rot_pos, inputs.cos, inputs.sin, num_heads=heads, interleaved=0)

    q, k = norm_rope(q, nq, "q"), norm_rope(k, nkv, "k")
    out = cached_attention(g, (q, k, v), i, (nq, nkv, hd), inputs.chunk, inputs.kv_type)
    return linear(g, out, f"{a}.o_proj", ck.get(f"{a}.o_proj.weight"), None, inputs.fmt)


def _mlp(g, ck, cfg: TextConfig, i: int, y: str, fmt: WeightFormat) -> str:
    m = f"{T}.layers.{i}.mlp"
    fused = np.concatenate([ck.get(f"{m}.gate_proj.weight"), ck.get(f"{m}.up_proj.weight")], axis=0)
    gu = linear(g, y, f"{m}.gate_up_proj", fused, None, fmt)
    del fused
    gate, up = g.op("Split", gu, g.const([cfg.intermediate_size] * 2), outputs=2, axis=-1)
    return linear(g, silu_mul(g, gate, up), f"{m}.down_proj", ck.get(f"{m}.down_proj.weight"), None, fmt)


def _layer(g, ck, cfg: TextConfig, i: int, x: str, pending, inputs: LayerInputs, add_deepstack: bool):
    """One decoder layer. The residual add that ends it is left `pending` (fused into the next
    layer's norm by SkipSimplifiedLayerNormalization) unless DeepStack features are added here."""
    ln = f"{T}.layers.{i}"
    w_in = ck.get(f"{ln}.input_layernorm.weight")
    with g.scope("input_norm"):
        if pending is None:
            y = rms_norm(g, x, f"{ln}.input_layernorm", w_in, cfg.rms_norm_eps)
        else:
            y, _, _, x = g.ms(
                "SkipSimplifiedLayerNormalization",
                pending[1],
                pending[0],
                g.weight(f"{ln}.input_layernorm.weight", w_in),
                outputs=4,
                epsilon=cfg.rms_norm_eps,
            )
    with g.scope("attn"):
        attn = _attention(g, ck, cfg, i, y, inputs)
    with g.scope("post_attention_norm"):
        y2, _, _, x = g.ms(
            "SkipSimplifiedLayerNormalization",
            attn,
            x,
            g.weight(f"{ln}.post_attention_layernorm.weight", ck.get(f"{ln}.post_attention_layernorm.weight")),
            outputs=4,
            epsilon=cfg.rms_norm_eps,
        )
    with g.scope("mlp"):
        mlp = _mlp(g, ck, cfg, i, y2, inputs.fmt)
    if not add_deepstack:
        return x, (x, mlp)
    with g.scope("deepstack"):  # add the level-i visual features at the image rows
        x = g.op("Add", x, mlp)
        level = g.op("Squeeze", g.op("Gather", inputs.deepstack, g.const([i]), axis=0), g.const([0]))
        return g.op("ScatterND", x, inputs.scatter_idx, level, reduction="add"), None


class _Inputs(NamedTuple):
    ids: str
    positions: str
    visual: str
    visual_pos: str
    deepstack: str
    logits_pos: str


def _declare_inputs(g: GraphBuilder, cfg: TextConfig, deepstack_levels: int, kv_type: int) -> _Inputs:
    h, nkv, hd = cfg.hidden_size, cfg.num_key_value_heads, cfg.head_dim
    inputs = _Inputs(
        g.input("input_ids", INT64, [1, "seq"]),
        g.input("position_ids", INT64, [3, 1, "seq"]),
        g.input("visual_embeds", FLOAT, ["visual", h]),
        g.input("visual_pos", INT64, ["visual"]),
        g.input("deepstack_embeds", FLOAT, [deepstack_levels, "visual", h]),
        g.input("logits_pos", INT64, ["wanted"]),
    )
    for i in range(cfg.num_hidden_layers):
        for kv in ("key", "value"):
            g.input(f"past_key_values.{i}.{kv}", kv_type, ["past", nkv, hd])
    return inputs


def _declare_outputs(g: GraphBuilder, cfg: TextConfig, logits: str, kv_type: int) -> None:
    g.output(logits, "logits", FLOAT, [1, "wanted", cfg.vocab_size])
    for i in range(cfg.num_hidden_layers):
        for kv in ("key", "value"):
            name = f"new_key_values.{i}.{kv}"
            g.output(name, name, kv_type, ["seq", cfg.num_key_value_heads, cfg.head_dim])


def _place_images(g: GraphBuilder, embeds: str, inputs: _Inputs) -> tuple[str, str]:
    """The token embeddings with the image rows replaced by the visual embeddings, and the [M, 2]
    indices (0, pos) of those rows (DeepStack adds at the same ones)."""
    rows = g.op("Unsqueeze", inputs.visual_pos, g.const([1]))
    scatter_idx = g.op("Concat", g.op("Mul", rows, g.const(0)), rows, axis=1)
    return g.op("ScatterND", embeds, scatter_idx, inputs.visual), scatter_idx


def build_decoder(
    g: GraphBuilder,
    ck: Checkpoint,
    cfg: TextConfig,
    deepstack_levels: int,
    fmt: WeightFormat,
    progress=lambda done, total: None,
    embed_fmt: WeightFormat | None = None,
    kv_dtype: str = "fp32",
) -> None:
    """The whole decoder into `g` (inputs and outputs as in this module's docstring), weights
    streamed from `ck` one tensor at a time; `fmt` stores the layers' weights, `embed_fmt` the
    tied embedding (lookup and lm_head share one stored matrix). `progress(done, total)` ticks
    once per layer."""
    kv_type = KV_DTYPES[kv_dtype]
    inputs = _declare_inputs(g, cfg, deepstack_levels, kv_type)
    steps = cfg.num_hidden_layers + 2
    with g.scope("embed"):
        embeds, lm_head = _embedding(g, ck, cfg, embed_fmt or fmt, inputs.ids)
        progress(1, steps)
        x, scatter_idx = _place_images(g, embeds, inputs)
    with g.scope("rotary"):
        cos, sin = _mrope_cos_sin(g, cfg, inputs.positions)
        seq = g.op("Squeeze", g.op("Shape", inputs.ids, start=1, end=2), g.const([0]))
        rot_pos = g.op("Unsqueeze", g.op("Range", g.const(0), seq, g.const(1)), g.const([0]))
    with g.scope("attn_mask"):
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        chunk = chunk_shape(g, "past_key_values.0.key", inputs.ids, group)

    layer_inputs = LayerInputs(cos, sin, rot_pos, chunk, scatter_idx, inputs.deepstack, fmt, kv_type)
    pending = None  # (residual, branch) not yet summed: fused into the next norm
    for i in range(cfg.num_hidden_layers):
        with g.scope(f"layers.{i}"):
            x, pending = _layer(g, ck, cfg, i, x, pending, layer_inputs, add_deepstack=i < deepstack_levels)
        progress(i + 2, steps)
    with g.scope("final_norm"):
        if pending is not None:
            x = g.op("Add", *pending)
        last = g.op("Gather", x, inputs.logits_pos, axis=1)  # [1, P, H]
        last = rms_norm(g, last, f"{T}.norm", ck.get(f"{T}.norm.weight"), cfg.rms_norm_eps)
    with g.scope("lm_head"):
        logits = lm_head(last)
    _declare_outputs(g, cfg, logits, kv_type)
    progress(steps, steps)
