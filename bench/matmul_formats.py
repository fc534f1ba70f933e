"""Weight formats for the compute-bound matmuls (vision, prompt chunks): error and speed on this CPU.

    python -m bench.matmul_formats [--shape M K N ...] [--threads N]

Each candidate is one onnxruntime node on the same weights and the same activations: normal values
with a few outlier channels, as transformer activations have (they are what per-tensor int8
activation quantization handles worst). Errors are the largest deviation from the float64 product,
as a fraction of its largest value. The AVX2 column emulates VPMADDUBSW (saturating int16 pair
sums), the instruction onnxruntime's u8 x s8 GEMM uses where the CPU has neither VNNI nor AMX,
on a sample of output columns: it shows what such a CPU would compute, whatever CPU runs this.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from engine.cpu import cpu_info
from exporter.graph.ops import FP32, WeightFormat, dynamic_quantize_matmul
from exporter.probes.kernels import linear_session, matmul_session
from exporter.quantize import Int8Weight, quantize_int8

SAMPLE_ROWS = 16  # rows on which the AVX2 emulation (slow, numpy) is compared with this CPU


def fp32(w: np.ndarray, threads: int):
    return linear_session(w, FP32, threads), None


def int8_full_range(w: np.ndarray, threads: int):
    """Per-channel int8 over the whole [-127, 127]: what the exporter wrote before 7-bit weights."""
    n, k = w.shape
    scale = (np.abs(w).max(1) / 127).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    weight = Int8Weight(np.ascontiguousarray(q.T), scale)
    return matmul_session(k, n, lambda g, x: dynamic_quantize_matmul(g, x, "w", weight, None), threads), (q, scale)


def int8_seven_bit(w: np.ndarray, threads: int):
    q = quantize_int8(w)
    return linear_session(w, WeightFormat("int8"), threads), (np.ascontiguousarray(q.q_kn.T), q.scales)


def uint8_zero_point(w: np.ndarray, threads: int):
    n, k = w.shape
    lo, hi = np.minimum(w.min(1), 0), np.maximum(w.max(1), 0)
    scale = ((hi - lo) / 255).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
    q = np.clip(np.rint(w / scale[:, None]) + zp[:, None], 0, 255).astype(np.uint8)

    def emit(g, x):
        return g.ms(
            "DynamicQuantizeMatMul",
            x,
            g.weight("b", np.ascontiguousarray(q.T)),
            g.weight("s", scale),
            g.weight("z", zp),
        )

    return matmul_session(k, n, emit, threads), None


def nbits(bits: int, block: int) -> Callable:
    fmt = WeightFormat("int4" if bits == 4 else "int8-block", block)

    def build(w: np.ndarray, threads: int):
        return linear_session(w, fmt, threads), None

    return build


CANDIDATES: dict[str, Callable] = {
    "fp32 MatMul": fp32,
    "int8 full range [-127, 127] (DynamicQuantizeMatMul)": int8_full_range,
    "int8 7-bit [-63, 63] (DynamicQuantizeMatMul; default)": int8_seven_bit,
    "u8u8 with zero points (DynamicQuantizeMatMul)": uint8_zero_point,
    "MatMulNBits 8-bit, block 128": nbits(8, 128),
    "MatMulNBits 8-bit, block 32 (int8-block)": nbits(8, 32),
    "MatMulNBits 4-bit, block 128": nbits(4, 128),
}


def activations(m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, rng.choice(k, max(2, k // 400), replace=False)] *= 25
    return x


def int8_emulated(x: np.ndarray, rows: int, q: np.ndarray, scale: np.ndarray, saturate: bool = True) -> np.ndarray:
    """The first `rows` rows of u8 activations x s8 weights through AVX2's VPMADDUBSW (k pairs
    saturated to int16), or with exact integer sums as VNNI and AMX compute (`saturate=False`);
    activations are quantized over the whole tensor, as onnxruntime does."""
    low, high = (-32768, 32767) if saturate else (None, None)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    xs = (hi - lo) / 255
    zp = float(np.clip(np.rint(-lo / xs), 0, 255))
    xq = np.clip(np.rint(x[:rows] / xs) + zp, 0, 255).astype(np.int32)
    out = np.empty((rows, len(q)))
    for c in range(len(q)):
        qc = q[c].astype(np.int32)
        prod = xq * qc[None, :]
        pairs = np.clip(prod[:, 0::2] + prod[:, 1::2], low, high).sum(1, dtype=np.int64)
        out[:, c] = (pairs - zp * qc.sum(dtype=np.int64)) * xs * scale[c]
    return out


def best_seconds(session: ort.InferenceSession, x: np.ndarray, repeats: int) -> float:
    session.run(None, {"x": x})
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"x": x})
        best = min(best, time.perf_counter() - t)
    return best


def measure(m: int, k: int, n: int, threads: int, repeats: int = 7) -> list[dict]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    x = activations(m, k, rng)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    top = np.abs(exact).max()
    rows = []
    for name, build in CANDIDATES.items():
        session, int8 = build(w, threads)
        y = session.run(None, {"x": x})[0]
        seconds = best_seconds(session, x, repeats)
        row = {
            "format": name,
            "error": float(np.abs(y - exact).max() / top),
            "error_sample": float(np.abs(y[:SAMPLE_ROWS] - exact[:SAMPLE_ROWS]).max() / top),
            "ms": seconds * 1e3,
            "gops": 2 * m * k * n / seconds / 1e9,
            "weight_bytes_per_param": _bytes_per_param(name),
        }
        if int8 is not None:
            for cpu, saturate in (("avx2", True), ("vnni", False)):
                emulated = int8_emulated(x, SAMPLE_ROWS, *int8, saturate=saturate)
                row[f"{cpu}_error_sample"] = float(np.abs(emulated - exact[:SAMPLE_ROWS]).max() / top)
        rows.append(row)
    return rows


def _bytes_per_param(name: str) -> float:
    if name.startswith("fp32"):
        return 4.0
    if "4-bit" in name:
        return 0.5 + 4.5 / 128
    if "block 32" in name:
        return 1 + 5 / 32
    if "block 128" in name:
        return 1 + 5 / 128
    return 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.matmul_formats")
    ap.add_argument(
        "--shape",
        nargs=3,
        type=int,
        action="append",
        metavar=("M", "K", "N"),
        help="rows, inner and output size (default: a 448x448 vision MLP and a 256-token prompt chunk)",
    )
    ap.add_argument("--threads", type=int, default=cpu_info().physical_cores)
    args = ap.parse_args(argv)
    shapes = args.shape or [(784, 1024, 4096), (256, 2560, 9728)]
    print(
        f"CPU: {cpu_info().summary()} (class {cpu_info().cpu_class}); onnxruntime {ort.__version__}, "
        f"threads={args.threads}\n"
    )
    for m, k, n in shapes:
        print(
            f"{m} x {k} x {n}\n\n| format | error (of scale) | first {SAMPLE_ROWS} rows: this CPU / emulated "
            "AVX2 / emulated VNNI, AMX | ms | GOP/s | bytes/weight |"
        )
        print("|---|---|---|---|---|---|")
        for r in measure(m, k, n, args.threads):
            emulated = (
                f"{r['avx2_error_sample']:.3f} / {r['vnni_error_sample']:.3f}"
                if "avx2_error_sample" in r
                else "not emulated"
            )
            print(
                f"| {r['format']} | {r['error']:.3f} | {r['error_sample']:.3f} / {emulated} | {r['ms']:.1f} | "
                f"{r['gops']:.0f} | {r['weight_bytes_per_param']:.2f} |",
                flush=True,
            )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
