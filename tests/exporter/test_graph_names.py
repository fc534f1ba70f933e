"""Exported graphs are navigable: every node is named by the component and layer it belongs to."""

from __future__ import annotations

import re
from collections import Counter

import onnx


def node_names(path) -> list[tuple[str, str]]:
    model = onnx.load(str(path), load_external_data=False)
    return [(node.name, node.op_type) for node in model.graph.node]


def test_decoder_nodes_are_scoped_by_layer_and_component(tiny_int4):
    nodes = node_names(tiny_int4 / "decoder.onnx")
    assert all(name.startswith("/decoder/") for name, _ in nodes)
    assert len({name for name, _ in nodes}) == len(nodes)  # unique, as onnxruntime needs
    layer0 = Counter(
        re.sub(r"_\d+$", "", name)
        for name, op in nodes
        if name.startswith("/decoder/layers.0/") and op == "MatMulNBits"
    )
    assert layer0 == Counter(
        {
            "/decoder/layers.0/attn/qkv_proj/MatMulNBits": 1,
            "/decoder/layers.0/attn/o_proj/MatMulNBits": 1,
            "/decoder/layers.0/mlp/gate_up_proj/MatMulNBits": 1,
            "/decoder/layers.0/mlp/down_proj/MatMulNBits": 1,
        }
    )
    layers = {int(m.group(1)) for name, _ in nodes if (m := re.match(r"/decoder/layers\.(\d+)/", name))}
    assert layers == set(range(len(layers))) and len(layers) > 1
    assert any(name.startswith("/decoder/lm_head/") and op == "MatMulNBits" for name, op in nodes)
    assert any(name.startswith("/decoder/layers.0/attn/") and op == "GroupQueryAttention" for name, op in nodes)


def test_vision_nodes_are_scoped_by_block_and_component(tiny_int4):
    nodes = node_names(tiny_int4 / "vision.onnx")
    assert all(name.startswith("/vision/") for name, _ in nodes)
    assert any(name.startswith("/vision/blocks.0/attn/") and op == "MultiHeadAttention" for name, op in nodes)
    assert any(name.startswith("/vision/merger/") for name, _ in nodes)
    assert any(name.startswith("/vision/deepstack_merger.0/") for name, _ in nodes)
