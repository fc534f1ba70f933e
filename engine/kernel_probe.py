"""Does the int8 prompt graph pay on this computer? A second of the two kernels decides.

The optional prompt graph trades ~4 GB of disk and memory for onnxruntime's int8 GEMM. How much
faster that GEMM is than the int4 kernel depends entirely on the processor: about 7x with AMX,
little or nothing on AVX2-only or AVX-512 VNNI machines. So the setup wizard offers it from a
measurement on the user's own CPU, not from a guess; the result is cached per processor and
onnxruntime version, because neither the hardware nor the kernels change between runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .cpu import CpuInfo, cpu_info
from .probe_cache import OptionAdvice, measured_per_cpu

# A prompt chunk through the MLP's up projection: the shape that dominates reading a prompt.
PROBE_ROWS, PROBE_K, PROBE_N = 256, 2560, 9728
INT4_BLOCK = 128
# The part of prompt reading that the int8 kernels speed up. Calibrated on the full-size model: on
# an AMX Xeon the kernels differ 7.5x and prompts were read 2.5x faster (41 -> 101 tok/s); the rest
# (attention, activation quantization, int4 lm_head) does not change.
PROMPT_GAIN_SHARE = 0.7
OFFER_AT = 1.3  # prompt reading at least this much faster: offered
SUGGEST_AT = 2.0  # ... and ticked by default
_CACHE_VERSION = 1


@dataclass(frozen=True)
class PromptGraphAdvice(OptionAdvice):
    offer_at: ClassVar[float] = OFFER_AT
    suggest_at: ClassVar[float] = SUGGEST_AT

    cpu_summary: str
    int4_gops: float
    int8_gops: float

    @property
    def kernel_speedup(self) -> float:
        return self.int8_gops / self.int4_gops if self.int4_gops > 0 else 0.0

    @property
    def prompt_speedup(self) -> float:
        """Predicted speed-up of reading a prompt: only its matmuls get faster (Amdahl)."""
        s = max(self.kernel_speedup, 1e-9)
        return 1 / ((1 - PROMPT_GAIN_SHARE) + PROMPT_GAIN_SHARE / s)

    @property
    def gain(self) -> float:
        return self.prompt_speedup

    def hint(self) -> str:
        if self.offered:
            return (
                f"Measured on this computer: questions about an image are read about "
                f"{self.prompt_speedup:.1f}x faster; needs ~4 GB more disk and memory."
            )
        return (
            f"Not offered: measured on this computer ({self.cpu_summary}), it would read questions only "
            f"{self.prompt_speedup:.1f}x faster, not worth ~4 GB more disk and memory."
        )


def single_node_session(node, inits: list, k: int, n: int, threads: int | None = None) -> ort.InferenceSession:
    """A one-node graph x [M, k] -> y [M, n] (for timing one kernel on its own)."""
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        inits,
    )
    return probe_session(graph, threads)


def probe_session(graph, threads: int | None = None) -> ort.InferenceSession:
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


def nbits_matmul(w_nk: np.ndarray, bits: int, block: int, accuracy_level: int = 4):
    """(node, initializers) of MatMulNBits over a [N, K] weight, packed as the exporter packs it."""
    from exporter.quantize import quantize_int4, quantize_int8_blocks

    n, k = w_nk.shape
    q = quantize_int4(w_nk, block) if bits == 4 else quantize_int8_blocks(w_nk, block)
    return nbits_matmul_node(k, n, bits, q.block_size, accuracy_level), nbits_initializers(
        q.packed, q.scales, q.zero_points
    )


def nbits_matmul_node(k: int, n: int, bits: int, block: int, accuracy_level: int = 4):
    """The MatMulNBits node x [M, k] -> y [M, n] as the exporter writes it (initializers b, s, z)."""
    return helper.make_node(
        "MatMulNBits",
        ["x", "b", "s", "z"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        accuracy_level=accuracy_level,
    )


def nbits_initializers(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray) -> list:
    return [
        numpy_helper.from_array(packed, "b"),
        numpy_helper.from_array(scales, "s"),
        numpy_helper.from_array(zero_points, "z"),
    ]


def int8_matmul(w_nk: np.ndarray):
    """(node, initializers) of DynamicQuantizeMatMul with the exporter's int8 weights."""
    from exporter.quantize import quantize_int8

    q = quantize_int8(w_nk)
    return int8_matmul_node(q.q_kn, q.scales)


def int8_matmul_node(q_kn: np.ndarray, scales: np.ndarray):
    """(node, initializers) of DynamicQuantizeMatMul over int8 weights [K, N], one scale per column."""
    inits = [
        numpy_helper.from_array(q_kn, "b"),
        numpy_helper.from_array(scales, "s"),
        numpy_helper.from_array(np.zeros(len(scales), np.int8), "z"),
    ]
    return helper.make_node("DynamicQuantizeMatMul", ["x", "b", "s", "z"], ["y"], domain="com.microsoft"), inits


def _best_gops(sessions: list[ort.InferenceSession], x: np.ndarray, budget: float) -> list[float]:
    """Best speed of each session, their runs interleaved so a busy moment hits both alike."""
    for session in sessions:
        session.run(None, {"x": x})  # prepacking and first touch
    best = [float("inf")] * len(sessions)
    start = time.perf_counter()
    while time.perf_counter() - start < budget or max(best) == float("inf"):
        for i, session in enumerate(sessions):
            t = time.perf_counter()
            session.run(None, {"x": x})
            best[i] = min(best[i], time.perf_counter() - t)
    return [2 * PROBE_ROWS * PROBE_K * PROBE_N / b / 1e9 for b in best]


def measure_prompt_kernels(seconds: float = 1.0, cpu: CpuInfo | None = None) -> PromptGraphAdvice:
    """Time both kernels for about `seconds` in all (best run of each)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((PROBE_N, PROBE_K)) * 0.02).astype(np.float32)
    x = rng.standard_normal((PROBE_ROWS, PROBE_K)).astype(np.float32)
    sessions = [
        single_node_session(*nbits_matmul(w, 4, INT4_BLOCK), PROBE_K, PROBE_N),
        single_node_session(*int8_matmul(w), PROBE_K, PROBE_N),
    ]
    int4, int8 = _best_gops(sessions, x, seconds)
    return PromptGraphAdvice((cpu or cpu_info()).summary(), round(int4, 1), round(int8, 1))


def prompt_graph_advice(cache_file: Path | None = None, seconds: float = 0.6) -> PromptGraphAdvice:
    """The measured advice, from `cache_file` when it was measured on this CPU and onnxruntime."""
    return measured_per_cpu(
        cache_file, _CACHE_VERSION, PromptGraphAdvice, lambda cpu: measure_prompt_kernels(seconds, cpu)
    )
