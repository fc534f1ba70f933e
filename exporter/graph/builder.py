"""A small declarative graph builder on top of onnx.helper.

`GraphBuilder.op("MatMul", x, w)` appends a node and returns its output name(s); initializers go
straight to the external-data writer. The result is a ModelProto whose weights live on disk (or,
without a writer, a small graph with its weights inside, for timing a kernel on its own).
Nodes are named by where they sit (`with g.scope("layers.3"), g.scope("attn"): ...` gives
`/decoder/layers.3/attn/MatMulNBits`), so the graph reads in Netron and a profile can total
time per layer and per component. A number is added only to tell apart nodes of one type in one
scope (`Reshape`, `Reshape_1`), so adding a node renames nothing outside its own scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..writer import ExternalDataWriter

OPSET = 21
MS_DOMAIN = "com.microsoft"
FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32


class GraphBuilder:
    def __init__(self, name: str, writer: ExternalDataWriter | None = None):
        self.name = name
        self.writer = writer
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._taken: dict[str, int] = {}  # node name -> how many nodes asked for it
        self._consts: dict[tuple, str] = {}
        self._scopes: list[str] = [name]

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Nodes added inside are named under `name` (nested scopes make a path)."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    # -- values -------------------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> str:
        if value != name:
            self.op("Identity", value, outputs=[name])
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        if self.writer is None:
            # np.asarray, not np.ascontiguousarray: that one turns a scalar into shape [1]
            self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        else:
            self.initializers.append(self.writer.tensor(name, array))
        return name

    def weight_alias(self, name: str, of: str, shape: tuple[int, ...]) -> str:
        source = next(t for t in self.initializers if t.name == of)
        self.initializers.append(self.writer.alias(name, source, shape))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant, deduplicated."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(f"const_{len(self._consts)}", arr)
        return self._consts[key]

    # -- nodes --------------------------------------------------------------------------------
    def op(
        self, op_type: str, *inputs: str | None, outputs: int | list[str] = 1, domain: str = "", **attrs
    ) -> str | list[str]:
        node = self._node_name(op_type)
        if isinstance(outputs, int):
            names = [f"{node}_output" if outputs == 1 else f"{node}_output_{i}" for i in range(outputs)]
        else:
            names = list(outputs)
        ins = ["" if i is None else i for i in inputs]
        self.nodes.append(helper.make_node(op_type, ins, names, name=node, domain=domain, **attrs))
        return names[0] if len(names) == 1 else names

    def _node_name(self, op_type: str) -> str:
        """'/graph/scope/.../OpType', numbered from the second of its type in the same scope."""
        base = "/" + "/".join(self._scopes) + "/" + op_type
        count = self._taken.get(base, 0)
        self._taken[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def ms(self, op_type: str, *inputs: str | None, outputs: int | list[str] = 1, **attrs):
        return self.op(op_type, *inputs, outputs=outputs, domain=MS_DOMAIN, **attrs)

    # -- result -------------------------------------------------------------------------------
    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)

    def model(self, doc: str = "") -> onnx.ModelProto:
        model = helper.make_model(
            self.graph(),
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="iris-exporter",
            doc_string=doc,
        )
        model.ir_version = 10
        return model

    def save(self, path: Path, doc: str = "") -> None:
        self.writer.close()
        onnx.save_model(self.model(doc), str(path))
