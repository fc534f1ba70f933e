"""The exact tensor names and shapes a Qwen3-VL checkpoint holds, derived from its config.

The exporter checks the checkpoint against this before it writes anything, and the benchmark's
random full-size checkpoint is generated from it, so both agree with the real file.
"""

from __future__ import annotations

from .config import ModelConfig

VISUAL = "model.visual"
TEXT = "model.language_model"
LM_HEAD = "lm_head.weight"


def vision_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    v = cfg.vision
    d, f = v.hidden_size, v.intermediate_size
    merged = d * v.merge_unit
    out: dict[str, tuple[int, ...]] = {
        f"{VISUAL}.patch_embed.proj.weight": (d, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),
        f"{VISUAL}.patch_embed.proj.bias": (d,),
        f"{VISUAL}.pos_embed.weight": (v.num_position_embeddings, d),
    }
    for i in range(v.depth):
        b = f"{VISUAL}.blocks.{i}"
        out.update(
            {
                f"{b}.norm1.weight": (d,),
                f"{b}.norm1.bias": (d,),
                f"{b}.norm2.weight": (d,),
                f"{b}.norm2.bias": (d,),
                f"{b}.attn.qkv.weight": (3 * d, d),
                f"{b}.attn.qkv.bias": (3 * d,),
                f"{b}.attn.proj.weight": (d, d),
                f"{b}.attn.proj.bias": (d,),
                f"{b}.mlp.linear_fc1.weight": (f, d),
                f"{b}.mlp.linear_fc1.bias": (f,),
                f"{b}.mlp.linear_fc2.weight": (d, f),
                f"{b}.mlp.linear_fc2.bias": (d,),
            }
        )
    mergers = [(f"{VISUAL}.merger", d)] + [
        (f"{VISUAL}.deepstack_merger_list.{j}", merged) for j in range(len(v.deepstack_visual_indexes))
    ]
    for prefix, norm_width in mergers:
        out.update(
            {
                f"{prefix}.norm.weight": (norm_width,),
                f"{prefix}.norm.bias": (norm_width,),
                f"{prefix}.linear_fc1.weight": (merged, merged),
                f"{prefix}.linear_fc1.bias": (merged,),
                f"{prefix}.linear_fc2.weight": (v.out_hidden_size, merged),
                f"{prefix}.linear_fc2.bias": (v.out_hidden_size,),
            }
        )
    return out


def text_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    t = cfg.text
    h, f, hd = t.hidden_size, t.intermediate_size, t.head_dim
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    out: dict[str, tuple[int, ...]] = {f"{TEXT}.embed_tokens.weight": (t.vocab_size, h)}
    for i in range(t.num_hidden_layers):
        b = f"{TEXT}.layers.{i}"
        out.update(
            {
                f"{b}.input_layernorm.weight": (h,),
                f"{b}.post_attention_layernorm.weight": (h,),
                f"{b}.self_attn.q_proj.weight": (q, h),
                f"{b}.self_attn.k_proj.weight": (kv, h),
                f"{b}.self_attn.v_proj.weight": (kv, h),
                f"{b}.self_attn.o_proj.weight": (h, q),
                f"{b}.self_attn.q_norm.weight": (hd,),
                f"{b}.self_attn.k_norm.weight": (hd,),
                f"{b}.mlp.gate_proj.weight": (f, h),
                f"{b}.mlp.up_proj.weight": (f, h),
                f"{b}.mlp.down_proj.weight": (h, f),
            }
        )
    out[f"{TEXT}.norm.weight"] = (h,)
    return out


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the checkpoint must hold. `lm_head.weight` is optional when tied (see below)."""
    out = vision_tensors(cfg)
    out.update(text_tensors(cfg))
    if not cfg.text.tie_word_embeddings:
        out[LM_HEAD] = (cfg.text.vocab_size, cfg.text.hidden_size)
    return out


def optional_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensors that may be present and are ignored: a tied checkpoint may still carry lm_head."""
    if cfg.text.tie_word_embeddings:
        return {LM_HEAD: (cfg.text.vocab_size, cfg.text.hidden_size)}
    return {}
