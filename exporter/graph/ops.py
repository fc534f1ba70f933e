"""Emitters for the few patterns both graphs use: linear layers, norms, activations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..quantize import BlockWeight, Int8Weight, quantize_blocks, quantize_int8
from .builder import GraphBuilder


@dataclass(frozen=True)
class WeightFormat:
    """How a group of Linear weights is stored: plain fp32, or quantized for one of onnxruntime's kernels."""

    # "fp32" | "int4" (MatMulNBits) | "int8" (DynamicQuantizeMatMul, per-channel weights, one activation
    # scale per call) | "int8-block" (MatMulNBits 8-bit: weights and activations quantized per block)
    kind: str = "fp32"
    block_size: int = 32
    accuracy_level: int = 4

    def __post_init__(self):
        if self.kind not in ("fp32", "int4", "int8", "int8-block"):
            raise ValueError(f"unknown weight format {self.kind}")


FP32 = WeightFormat("fp32")  # the reference export, and weights kept exact


def linear(
    g: GraphBuilder, x: str, name: str, weight_nk: np.ndarray, bias: np.ndarray | None, fmt: WeightFormat
) -> str:
    """y = x @ W^T + b for a torch-layout weight [out, in]; its nodes are scoped by the weight's
    last name part (qkv_proj, down_proj, ...)."""
    with g.scope(name.rsplit(".", 1)[-1]):
        return _linear(g, x, name, weight_nk, bias, fmt)


def _linear(
    g: GraphBuilder, x: str, name: str, weight_nk: np.ndarray, bias: np.ndarray | None, fmt: WeightFormat
) -> str:
    if fmt.kind in ("int4", "int8-block"):
        q = quantize_blocks(weight_nk, fmt.block_size, 4 if fmt.kind == "int4" else 8)
        return matmul_nbits(g, x, name, q, bias, fmt.accuracy_level)
    if fmt.kind == "int8":
        return dynamic_quantize_matmul(g, x, name, quantize_int8(weight_nk), bias)
    w = g.weight(f"{name}.weight_t", np.ascontiguousarray(weight_nk.T))
    y = g.op("MatMul", x, w)
    if bias is not None:
        y = g.op("Add", y, g.weight(f"{name}.bias", bias.astype(np.float32)))
    return y


def matmul_nbits(
    g: GraphBuilder, x: str, name: str, q: BlockWeight, bias: np.ndarray | None, accuracy_level: int
) -> str:
    """MatMulNBits over block-quantized weights (`accuracy_level` 4: int8 activations per block)."""
    inputs = [x, g.weight(f"{name}.qweight", q.packed), g.weight(f"{name}.scales", q.scales)]
    inputs.append(g.weight(f"{name}.zero_points", q.zero_points))
    if bias is not None:
        inputs += [None, g.weight(f"{name}.bias", bias.astype(np.float32))]
    return g.ms(
        "MatMulNBits", *inputs, K=q.k, N=q.n, bits=q.bits, block_size=q.block_size, accuracy_level=accuracy_level
    )


def dynamic_quantize_matmul(g: GraphBuilder, x: str, name: str, q: Int8Weight, bias: np.ndarray | None) -> str:
    """Per-output-channel symmetric weights (7 bits in int8: exact on every CPU, see quantize_int8);
    activations are quantized per call by onnxruntime, which then runs its u8s8 integer GEMM (AMX,
    VNNI or AVX2): for compute-bound shapes only."""
    inputs = [
        x,
        g.weight(f"{name}.weight_q8", q.q_kn),
        g.weight(f"{name}.scale", q.scales),
        g.weight(f"{name}.zero_point", np.zeros(len(q.scales), np.int8)),
    ]
    if bias is not None:
        inputs.append(g.weight(f"{name}.bias", bias.astype(np.float32)))
    return g.ms("DynamicQuantizeMatMul", *inputs)


def layer_norm(g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray, eps: float) -> str:
    return g.op(
        "LayerNormalization",
        x,
        g.weight(f"{name}.weight", weight),
        g.weight(f"{name}.bias", bias),
        axis=-1,
        epsilon=eps,
    )


def rms_norm(g: GraphBuilder, x: str, name: str, weight: np.ndarray, eps: float) -> str:
    """RMSNorm in fp32 (SimplifiedLayerNormalization is registered by onnxruntime in the ONNX domain)."""
    return g.op("SimplifiedLayerNormalization", x, g.weight(f"{name}.weight", weight), axis=-1, epsilon=eps)


def gelu(g: GraphBuilder, x: str, approximate: str) -> str:
    return g.op("Gelu", x, approximate=approximate)


def silu_mul(g: GraphBuilder, gate: str, up: str) -> str:
    return g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)


def rope_inverse_frequencies(theta: float, dim: int) -> np.ndarray:
    """1 / theta^(2i/dim) for i < dim/2, correctly rounded to float32 from Python's float64 math.

    numpy's float32 power takes a different SIMD routine on AVX-512 and AVX2 CPUs (last-bit
    differences), so the same checkpoint exported on two machines gave different graphs."""
    return np.array([1.0 / math.pow(theta, i / dim) for i in range(0, dim, 2)], dtype=np.float32)
