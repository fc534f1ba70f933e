"""Sessions for small probe graphs: one kernel or one layer's attention, timed on its own.

The engine times its vision attention at first load, and the setup wizard times kernels to decide
which optional graphs to offer: both must run a probe as the engine runs the real graphs.
"""

from __future__ import annotations

import onnxruntime as ort
from onnx import GraphProto, helper

from .cpu import cpu_info


def probe_session(graph: GraphProto, threads: int | None = None) -> ort.InferenceSession:
    """A session for a small probe graph (standard and Microsoft ops), run as the engine runs."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or cpu_info().physical_cores
    so.log_severity_level = 3
    # Sessions timed in turn: a finished one's threads must not spin on the cores the next one needs.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
