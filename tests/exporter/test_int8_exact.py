"""int8 weights give the same integer sums on every CPU.

DynamicQuantizeMatMul runs on AMX or VNNI where the CPU has them (32-bit sums) and on AVX2's
VPMADDUBSW elsewhere, which adds two u8 x s8 products into a saturating int16. These tests emulate
that instruction on the exported weights, so they fail on any machine if full-range int8 weights
came back, and they check onnxruntime's own kernel on this machine against the dequantized weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter.quantize import INT8_WEIGHT_MAX, quantize_int8
from tests.fixtures import int8_kernels
from tests.fixtures.int8_kernels import full_range_weights, outlier_activations


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """onnxruntime's DynamicQuantizeLinear: u8, one scale and zero point for the whole tensor."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.int64), scale, zp


def exact_sums(xq: np.ndarray, zp: int, q_kn: np.ndarray) -> np.ndarray:
    return (xq - zp) @ q_kn.astype(np.int64)


def vpmaddubsw_sums(xq: np.ndarray, zp: int, q_kn: np.ndarray) -> np.ndarray:
    """AVX2's u8 x s8 path: adjacent k pairs summed into a saturating int16, then widened."""
    q = q_kn.astype(np.int64).T  # [N, K]
    prod = xq[:, None, :] * q[None, :, :]
    pairs = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767)
    return pairs.sum(-1) - zp * q.sum(1)[None, :]


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def full_range_results() -> tuple[np.ndarray, np.ndarray]:
    """(AVX2's saturated, VNNI/AMX's exact) float results of the int8 matmul that
    tests/fixtures/int8_kernels.py runs on full-range weights ("matmul_full_range")."""
    x = outlier_activations(int8_kernels.ROWS, int8_kernels.K)
    q, scale = full_range_weights()
    xq, x_scale, zp = quantize_activations(x)
    to_float = x_scale * scale.astype(np.float64)[None, :]
    return vpmaddubsw_sums(xq, zp, q) * to_float, exact_sums(xq, zp, q) * to_float


def exported_int8_weights(model_dir) -> dict[str, np.ndarray]:
    model = onnx.load(str(model_dir / "vision.onnx"), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith(".weight_q8")}


def test_the_exported_int8_weights_cannot_saturate_avx2(tiny_int4):
    weights = exported_int8_weights(tiny_int4)
    assert weights, "the default export has int8 vision weights"
    for name, q in weights.items():
        assert q.dtype == np.int8 and np.abs(q.astype(np.int32)).max() <= INT8_WEIGHT_MAX, name
        x = outlier_activations(16, q.shape[0])
        xq, _, zp = quantize_activations(x)
        assert np.array_equal(vpmaddubsw_sums(xq, zp, q), exact_sums(xq, zp, q)), name


def test_full_range_int8_weights_would_saturate():
    """The control: with weights in [-127, 127] the AVX2 path loses sums on the same activations."""
    full, _scale = full_range_weights()
    xq, _, zp = quantize_activations(outlier_activations(16, full.shape[0]))
    assert not np.array_equal(vpmaddubsw_sums(xq, zp, full), exact_sums(xq, zp, full))


@pytest.mark.parametrize("k,n", [(256, 512), (1024, 1024)])
def test_onnxruntime_int8_matmul_on_this_cpu_equals_the_integer_reference(k, n):
    """The kernel this machine runs gives what exact integer arithmetic gives (to fp32 rounding),
    on activations with outlier channels."""
    from exporter.graph.ops import WeightFormat
    from exporter.probes.kernels import linear_session

    rng = np.random.default_rng(2)
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    q = quantize_int8(w)
    x = outlier_activations(64, k, seed=3)
    session = linear_session(w, WeightFormat("int8"))  # the graph's node, as the exporter writes it
    ours = session.run(None, {"x": x})[0].astype(np.float64)
    xq, x_scale, zp = quantize_activations(x)
    integer = exact_sums(xq, zp, q.q_kn) * x_scale * q.scales.astype(np.float64)[None, :]
    scale = np.abs(integer).max()
    assert np.abs(ours - integer).max() / scale < 1e-5
    # and the whole error against the float weights stays what 8-bit activations allow
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    assert np.abs(ours - exact).max() / np.abs(exact).max() < 0.06
