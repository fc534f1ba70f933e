"""Does the int8 prompt graph pay on this computer? A second of the two kernels decides.

The optional prompt graph trades ~4 GB of disk and memory for onnxruntime's int8 GEMM. How much
faster that GEMM is than the int4 kernel depends entirely on the processor: about 7x with AMX,
little or nothing on AVX2-only or AVX-512 VNNI machines. So the setup wizard offers it from a
measurement on the user's own CPU, not from a guess; the result is cached per processor and
onnxruntime version, because neither the hardware nor the kernels change between runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.cpu import CpuInfo, cpu_info
from engine.probe_cache import OptionAdvice, measured_per_cpu

from ..export import ExportOptions
from ..graph.ops import WeightFormat
from .kernels import best_seconds, linear_session

# A prompt chunk through the MLP's up projection: the shape that dominates reading a prompt.
PROBE_ROWS, PROBE_K, PROBE_N = 256, 2560, 9728
INT4 = ExportOptions().decoder_format()  # the decoder's layers as exported by default
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


def measure_prompt_kernels(seconds: float = 1.0, cpu: CpuInfo | None = None) -> PromptGraphAdvice:
    """Time both kernels for about `seconds` in all (best run of each)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((PROBE_N, PROBE_K)) * 0.02).astype(np.float32)
    x = rng.standard_normal((PROBE_ROWS, PROBE_K)).astype(np.float32)
    sessions = [linear_session(w, INT4), linear_session(w, WeightFormat("int8"))]
    best = best_seconds([lambda s=s: s.run(None, {"x": x}) for s in sessions], seconds)
    int4, int8 = (2 * PROBE_ROWS * PROBE_K * PROBE_N / b / 1e9 for b in best)
    return PromptGraphAdvice((cpu or cpu_info()).summary(), round(int4, 1), round(int8, 1))


def prompt_graph_advice(cache_file: Path | None = None, seconds: float = 0.6) -> PromptGraphAdvice:
    """The measured advice, from `cache_file` when it was measured on this CPU and onnxruntime."""
    return measured_per_cpu(
        cache_file, _CACHE_VERSION, PromptGraphAdvice, lambda cpu: measure_prompt_kernels(seconds, cpu)
    )
