"""Exported graphs are navigable: every node is named by the component and layer it belongs to."""

from __future__ import annotations

import re

import numpy as np
import onnx

from exporter.graph.builder import FLOAT, GraphBuilder


def node_names(path) -> list[tuple[str, str]]:
    model = onnx.load(str(path), load_external_data=False)
    return [(node.name, node.op_type) for node in model.graph.node]


def test_decoder_nodes_are_scoped_by_layer_and_component(tiny_int4):
    nodes = node_names(tiny_int4 / "decoder.onnx")
    assert all(name.startswith("/decoder/") for name, _ in nodes)
    assert len({name for name, _ in nodes}) == len(nodes)  # unique, as onnxruntime needs
    layer0 = [name for name, op in nodes if name.startswith("/decoder/layers.0/") and op == "MatMulNBits"]
    assert layer0 == [
        "/decoder/layers.0/attn/qkv_proj/MatMulNBits",
        "/decoder/layers.0/attn/o_proj/MatMulNBits",
        "/decoder/layers.0/mlp/gate_up_proj/MatMulNBits",
        "/decoder/layers.0/mlp/down_proj/MatMulNBits",
    ]
    layers = {int(m.group(1)) for name, _ in nodes if (m := re.match(r"/decoder/layers\.(\d+)/", name))}
    assert layers == set(range(len(layers))) and len(layers) > 1
    assert any(name.startswith("/decoder/lm_head/") and op == "MatMulNBits" for name, op in nodes)
    assert any(name.startswith("/decoder/layers.0/attn/") and op == "FusedMatMul" for name, op in nodes)


def test_vision_nodes_are_scoped_by_block_and_component(tiny_int4):
    nodes = node_names(tiny_int4 / "vision.onnx")
    assert all(name.startswith("/vision/") for name, _ in nodes)
    assert any(name.startswith("/vision/blocks.0/attn/") and op == "MultiHeadAttention" for name, op in nodes)
    assert any(name.startswith("/vision/merger/") for name, _ in nodes)
    assert any(name.startswith("/vision/deepstack_merger.0/") for name, _ in nodes)


def test_a_number_tells_apart_only_nodes_of_one_type_in_one_scope():
    g = GraphBuilder("decoder")
    x = g.input("x", FLOAT, [1])
    with g.scope("layers.0"):
        y = g.op("Neg", g.op("Neg", x))
    with g.scope("layers.1"):
        g.op("Neg", y)
    assert [n.name for n in g.nodes] == ["/decoder/layers.0/Neg", "/decoder/layers.0/Neg_1", "/decoder/layers.1/Neg"]


def test_a_node_added_in_one_scope_renames_nothing_in_another():
    def names(extra: bool) -> list[str]:
        g = GraphBuilder("decoder")
        x = g.input("x", FLOAT, [1])
        with g.scope("layers.0"):
            x = g.op("Neg", x)
            if extra:
                x = g.op("Add", x, g.const(np.ones(1, np.float32), np.float32))
        with g.scope("layers.1"):
            g.op("Add", x, x)
        return [n.name for n in g.nodes if n.name.startswith("/decoder/layers.1/")]

    assert names(extra=True) == names(extra=False) == ["/decoder/layers.1/Add"]
