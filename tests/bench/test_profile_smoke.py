"""The profiling script runs on the tiny model and attributes time to the right kinds of runs."""

from __future__ import annotations

from bench.profile import component_and_layer, main


def test_profile_groups_runs_and_names_the_operators(tiny_int4, tmp_path, capsys):
    out = tmp_path / "profile.md"
    assert main([str(tiny_int4), "--context", "1024", "--out", str(out)]) == 0
    text = out.read_text()
    for scenario in ("448x448 image", "896x896 image", "filling 1024 tokens"):
        assert scenario in text
    # 16 answer tokens: the first comes from the prompt run, 15 from decode steps
    assert "decode: 15 run(s)" in text
    assert "vision: 1 run(s)" in text
    assert "| MatMulNBits |" in text and "| FusedMatMul |" in text and "| MultiHeadAttention |" in text
    # Time is also given per component of the model and spread over its layers.
    for component in ("| attn/qkv_proj |", "| mlp/down_proj |", "| attn |", "| lm_head |"):
        assert component in text, component
    assert "layers: " in text and "(unscoped)" not in text


def test_node_names_give_component_and_layer():
    assert component_and_layer("/decoder/layers.3/attn/qkv_proj/MatMulNBits") == ("attn/qkv_proj", 3)
    assert component_and_layer("/vision/blocks.11/mlp/linear_fc2/MatMul_1") == ("mlp/linear_fc2", 11)
    assert component_and_layer("/decoder/lm_head/MatMulNBits") == ("lm_head", None)
    assert component_and_layer("Cast_fused_17") == ("(unscoped)", None)
