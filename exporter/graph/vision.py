"""The vision encoder graph: patch embed, position terms from grid_thw, blocks, DeepStack, merger.

One graph serves every image size: the learned position table is resampled (bilinear,
align_corners=True, in 2x2 merge-window order) and the 2-D rotary angles are computed inside the
graph from `grid_thw`, exactly as transformers does on the host. Inputs: pixel_values [N, C*P*P]
float32, one frame of each patch (a still's T frames are identical, so the patch weights are folded
over T), and grid_thw [1, 3] int64 (one image per run). Outputs: image_embeds [N/4, out_hidden] and
deepstack_embeds [levels, N/4, out_hidden].
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Checkpoint
from ..config import VisionConfig
from .builder import FLOAT, INT64, GraphBuilder
from .ops import FP32, WeightFormat, gelu, layer_norm, linear, rope_inverse_frequencies

P = "model.visual"


def _merge_order_coords(g: GraphBuilder, t: str, gh: str, gw: str, m: int) -> tuple[str, str]:
    """Row and column of every patch, in the order of pixel_values (2x2 windows, raster inside)."""
    zero, one, ax0, ax1 = g.const(0), g.const(1), g.const([0]), g.const([1])
    rows = g.op("Range", zero, gh, one)
    cols = g.op("Range", zero, gw, one)
    hw = g.op("Concat", g.op("Unsqueeze", gh, ax0), g.op("Unsqueeze", gw, ax0), axis=0)
    rgrid = g.op("Expand", g.op("Unsqueeze", rows, ax1), hw)
    cgrid = g.op("Expand", g.op("Unsqueeze", cols, ax0), hw)
    blocks = g.op(
        "Concat",
        g.op("Unsqueeze", g.op("Div", gh, g.const(m)), ax0),
        g.const([m]),
        g.op("Unsqueeze", g.op("Div", gw, g.const(m)), ax0),
        g.const([m]),
        axis=0,
    )

    def reorder(grid: str) -> str:
        x = g.op("Transpose", g.op("Reshape", grid, blocks), perm=[0, 2, 1, 3])
        x = g.op("Reshape", x, g.const([-1]))
        return g.op("Tile", x, g.op("Unsqueeze", t, ax0))

    return reorder(rgrid), reorder(cgrid)


def _axis_taps(g: GraphBuilder, idx_f: str, size: str, side: int) -> tuple[list[str], list[str]]:
    """Two bilinear taps and weights per patch along one axis (transformers' closed form)."""
    denom = g.op("Cast", g.op("Max", g.op("Sub", size, g.const(1)), g.const(1)), to=FLOAT)
    src = g.op("Div", g.op("Mul", idx_f, g.const(float(side - 1), np.float32)), denom)
    floor = g.op("Floor", src)
    frac = g.op("Sub", src, floor)
    taps, weights = [], []
    for offset in (0, 1):
        tap = g.op("Add", g.op("Cast", floor, to=INT64), g.const(offset))
        taps.append(g.op("Clip", tap, g.const(0), g.const(side - 1)))
        dist = g.op("Abs", g.op("Sub", frac, g.const(float(offset), np.float32)))
        weights.append(g.op("Max", g.op("Sub", g.const(1.0, np.float32), dist), g.const(0.0, np.float32)))
    return taps, weights


def _position_embedding(g, ck: Checkpoint, cfg: VisionConfig, rows, cols, gh, gw) -> str:
    side = cfg.grid_side
    table = g.weight(f"{P}.pos_embed.weight", ck.get(f"{P}.pos_embed.weight"))
    h_taps, h_w = _axis_taps(g, g.op("Cast", rows, to=FLOAT), gh, side)
    w_taps, w_w = _axis_taps(g, g.op("Cast", cols, to=FLOAT), gw, side)
    total = None
    for i in range(2):
        for j in range(2):
            index = g.op("Add", g.op("Mul", h_taps[i], g.const(side)), w_taps[j])
            weight = g.op("Unsqueeze", g.op("Mul", h_w[i], w_w[j]), g.const([1]))
            term = g.op("Mul", g.op("Gather", table, index, axis=0), weight)
            total = term if total is None else g.op("Add", total, term)
    return total


def _rotary_cache(g: GraphBuilder, cfg: VisionConfig, rows: str, cols: str) -> tuple[str, str]:
    """cos/sin [N, head_dim/2]: height angles then width angles (the rotate_half layout)."""
    dim = cfg.head_dim // 2
    inv = rope_inverse_frequencies(cfg.rope_theta, dim)
    inv_c = g.const(inv[None, :], np.float32)
    fh = g.op("Mul", g.op("Unsqueeze", g.op("Cast", rows, to=FLOAT), g.const([1])), inv_c)
    fw = g.op("Mul", g.op("Unsqueeze", g.op("Cast", cols, to=FLOAT), g.const([1])), inv_c)
    ang = g.op("Concat", fh, fw, axis=1)
    return g.op("Cos", ang), g.op("Sin", ang)


def _block(
    g, ck: Checkpoint, cfg: VisionConfig, i: int, x: str, cos: str, sin: str, pos_ids: str, fmt: WeightFormat
) -> str:
    b = f"{P}.blocks.{i}"
    d, eps = cfg.hidden_size, cfg.layer_norm_eps
    with g.scope("attn"):
        h = layer_norm(g, x, f"{b}.norm1", ck.get(f"{b}.norm1.weight"), ck.get(f"{b}.norm1.bias"), eps)
        qkv = linear(g, h, f"{b}.attn.qkv", ck.get(f"{b}.attn.qkv.weight"), ck.get(f"{b}.attn.qkv.bias"), fmt)
        q, k, v = g.op("Split", qkv, g.const([d, d, d]), outputs=3, axis=-1)
        q3, k3, v3 = (g.op("Unsqueeze", t, g.const([0])) for t in (q, k, v))
        q3 = g.ms("RotaryEmbedding", q3, pos_ids, cos, sin, num_heads=cfg.num_heads, interleaved=0)
        k3 = g.ms("RotaryEmbedding", k3, pos_ids, cos, sin, num_heads=cfg.num_heads, interleaved=0)
        attn = g.ms("MultiHeadAttention", q3, k3, v3, num_heads=cfg.num_heads, scale=float(cfg.head_dim**-0.5))
        attn = g.op("Squeeze", attn, g.const([0]))
        x = g.op(
            "Add",
            x,
            linear(g, attn, f"{b}.attn.proj", ck.get(f"{b}.attn.proj.weight"), ck.get(f"{b}.attn.proj.bias"), fmt),
        )
    with g.scope("mlp"):
        h = layer_norm(g, x, f"{b}.norm2", ck.get(f"{b}.norm2.weight"), ck.get(f"{b}.norm2.bias"), eps)
        h = linear(
            g, h, f"{b}.mlp.linear_fc1", ck.get(f"{b}.mlp.linear_fc1.weight"), ck.get(f"{b}.mlp.linear_fc1.bias"), fmt
        )
        h = gelu(g, h, "tanh" if "tanh" in cfg.hidden_act else "none")
        h = linear(
            g, h, f"{b}.mlp.linear_fc2", ck.get(f"{b}.mlp.linear_fc2.weight"), ck.get(f"{b}.mlp.linear_fc2.bias"), fmt
        )
        return g.op("Add", x, h)


def _merger(g, ck: Checkpoint, cfg: VisionConfig, prefix: str, x: str, postshuffle: bool, fmt: WeightFormat) -> str:
    """2x2 patch merge to the LLM width. DeepStack mergers normalise after the shuffle."""
    merged = cfg.hidden_size * cfg.merge_unit
    shuffle = g.const([-1, merged])
    if postshuffle:
        x = g.op("Reshape", x, shuffle)
    x = layer_norm(
        g, x, f"{prefix}.norm", ck.get(f"{prefix}.norm.weight"), ck.get(f"{prefix}.norm.bias"), cfg.layer_norm_eps
    )
    if not postshuffle:
        x = g.op("Reshape", x, shuffle)
    x = linear(
        g, x, f"{prefix}.linear_fc1", ck.get(f"{prefix}.linear_fc1.weight"), ck.get(f"{prefix}.linear_fc1.bias"), fmt
    )
    x = gelu(g, x, "none")
    return linear(
        g, x, f"{prefix}.linear_fc2", ck.get(f"{prefix}.linear_fc2.weight"), ck.get(f"{prefix}.linear_fc2.bias"), fmt
    )


def build_vision(
    g: GraphBuilder, ck: Checkpoint, cfg: VisionConfig, fmt: WeightFormat, progress=lambda done, total: None
) -> None:
    """The whole vision tower into `g` (inputs and outputs as in this module's docstring), for
    any image size; `fmt` stores the blocks' and mergers' weights (the patch embedding stays
    fp32). `progress(done, total)` ticks once per block."""
    pixels = g.input("pixel_values", FLOAT, ["num_patches", cfg.frame_patch_dim])
    grid = g.input("grid_thw", INT64, [1, 3])
    with g.scope("positions"):
        t, gh, gw = (
            g.op("Squeeze", g.op("Gather", g.op("Squeeze", grid, g.const([0])), g.const([i]), axis=0), g.const([0]))
            for i in range(3)
        )
        rows, cols = _merge_order_coords(g, t, gh, gw, cfg.spatial_merge_size)

    with g.scope("patch_embed"):
        # A still image is its frame repeated temporal_patch_size times, so the Conv3d over (T, P, P)
        # equals a conv over one frame with the weight summed over T: half the input and the work.
        wp = ck.get(f"{P}.patch_embed.proj.weight").reshape(
            cfg.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size**2
        )
        wp = wp.sum(axis=2, dtype=np.float32).reshape(cfg.hidden_size, cfg.frame_patch_dim)
        x = linear(g, pixels, f"{P}.patch_embed.proj", wp, ck.get(f"{P}.patch_embed.proj.bias"), FP32)
    with g.scope("pos_embed"):
        x = g.op("Add", x, _position_embedding(g, ck, cfg, rows, cols, gh, gw))

    with g.scope("rotary"):
        cos, sin = _rotary_cache(g, cfg, rows, cols)
        n = g.op("Shape", pixels, start=0, end=1)
        pos_ids = g.op(
            "Unsqueeze", g.op("Range", g.const(0), g.op("Squeeze", n, g.const([0])), g.const(1)), g.const([0])
        )
    deepstack = []
    for i in range(cfg.depth):
        with g.scope(f"blocks.{i}"):
            x = _block(g, ck, cfg, i, x, cos, sin, pos_ids, fmt)
        if i in cfg.deepstack_visual_indexes:
            j = cfg.deepstack_visual_indexes.index(i)
            with g.scope(f"deepstack_merger.{j}"):
                feat = _merger(g, ck, cfg, f"{P}.deepstack_merger_list.{j}", x, True, fmt)
                deepstack.append((j, g.op("Unsqueeze", feat, g.const([0]))))
        progress(i + 1, cfg.depth + 1)
    with g.scope("merger"):
        embeds = _merger(g, ck, cfg, f"{P}.merger", x, False, fmt)
    progress(cfg.depth + 1, cfg.depth + 1)
    levels = len(cfg.deepstack_visual_indexes)
    g.output(embeds, "image_embeds", FLOAT, ["num_tokens", cfg.out_hidden_size])
    with g.scope("deepstack_merger"):
        stacked = g.op("Concat", *[f for _, f in sorted(deepstack)], axis=0)
    g.output(stacked, "deepstack_embeds", FLOAT, [levels, "num_tokens", cfg.out_hidden_size])
