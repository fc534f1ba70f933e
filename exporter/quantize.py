"""Weight quantization: block-wise 4- or 8-bit for MatMulNBits (and GatherBlockQuantized), and
per-channel 7-bit-in-int8 for DynamicQuantizeMatMul.

Layout (per output row n of a [N, K] weight, blocks along K), for 4 bits:
  packed [N, K/bs, bs/2] uint8, low nibble = even k;  scales [N, K/bs] f32;
  zero_points [N, ceil((K/bs)/2)] uint8, low nibble first;  w = (q - zp) * scale.
8 bits: a byte per weight and per zero point.
The packing itself is onnxruntime's own C++ routine (the one its MatMulNBitsQuantizer uses).
Rows are processed in chunks so a 151936 x 2560 embedding never needs a full transposed copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnxruntime.capi import _pybind_state as _ort_c

_ROW_CHUNK = 8192


@dataclass
class BlockWeight:
    """A [N, K] weight quantized in blocks along K, for MatMulNBits with `bits` bits."""

    packed: np.ndarray  # uint8 [N, K/bs, bs*bits/8]
    scales: np.ndarray  # float32 [N, K/bs]
    zero_points: np.ndarray  # uint8 [N, ceil(K/bs*bits/8)]
    n: int
    k: int
    block_size: int
    bits: int


def fitting_block_size(k: int, block_size: int) -> int:
    """The requested block size, halved until it divides K (MatMulNBits needs a power of 2 >= 16)."""
    while block_size > 16 and k % block_size:
        block_size //= 2
    if k % block_size:
        raise ValueError(f"K={k} is not a multiple of 16; cannot quantize to blocks")
    return block_size


_PACKERS = {4: _ort_c.quantize_matmul_4bits, 8: _ort_c.quantize_matmul_8bits}


def quantize_blocks(weight_nk: np.ndarray, block_size: int, bits: int) -> BlockWeight:
    """Asymmetric block-wise quantization of a [N, K] float32 weight (a Linear's `weight`) to 4 or
    8 bits, packed as MatMulNBits reads it.

    The block size actually used (see `fitting_block_size`) is in the result."""
    n, k = weight_nk.shape
    block_size = fitting_block_size(k, block_size)
    kb = k // block_size
    block_bytes, zp_bytes = block_size * bits // 8, (kb * bits + 7) // 8
    packed = np.empty((n, kb, block_bytes), np.uint8)
    scales = np.empty((n, kb), np.float32)
    zps = np.empty((n, zp_bytes), np.uint8)
    for r0 in range(0, n, _ROW_CHUNK):
        r1 = min(n, r0 + _ROW_CHUNK)
        rows = r1 - r0
        w_kn = np.ascontiguousarray(weight_nk[r0:r1].T, dtype=np.float32)
        p = np.empty((rows, kb, block_bytes), np.uint8)
        s = np.empty((rows * kb,), np.float32)
        z = np.empty((rows * zp_bytes,), np.uint8)
        _PACKERS[bits](p, w_kn, s, z, block_size, rows, k, False)
        packed[r0:r1], scales[r0:r1], zps[r0:r1] = p, s.reshape(rows, kb), z.reshape(rows, zp_bytes)
    return BlockWeight(packed, scales, zps, n, k, block_size, bits)


# DynamicQuantizeMatMul multiplies u8 activations by s8 weights. Without VNNI or AMX (AVX2-only
# x86: AMD Zen 1-3, many laptops) onnxruntime runs it on VPMADDUBSW, which adds two u8 x s8
# products into a *saturating* int16: 255 x 127 x 2 overflows, and outputs silently go wrong
# (measured: 0.1-0.4 of scale on activations with outlier channels). With |w| <= 63 a pair is
# at most 255 x 64 x 2 = 32640 < 32767, so every kernel computes the same exact integer sums
# and the results do not depend on the processor. (onnxruntime's own quantizer calls this
# "reduce_range".)
INT8_WEIGHT_MAX = 63


@dataclass
class Int8Weight:
    q_kn: np.ndarray  # int8 [K, N], |q| <= INT8_WEIGHT_MAX
    scales: np.ndarray  # float32 [N], w = q * scale


def quantize_int8(weight_nk: np.ndarray) -> Int8Weight:
    """Symmetric per-output-channel quantization of a [N, K] weight for DynamicQuantizeMatMul."""
    scale = np.maximum(np.abs(weight_nk).max(axis=1), 1e-12).astype(np.float32) / INT8_WEIGHT_MAX
    q = np.clip(np.rint(weight_nk / scale[:, None]), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).astype(np.int8)
    return Int8Weight(np.ascontiguousarray(q.T), scale)
