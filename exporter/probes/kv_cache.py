"""Does an fp32 KV cache pay on this computer? A second of attention and one matmul decide.

The exporter stores the KV cache in fp16 by default: half the memory. Attention converts an fp16
cache to fp32 as it reads it, so on some processors a long conversation decodes noticeably faster
with an fp32 cache, at 1.2 GB more memory at the default 8k context. Whether that trade pays
depends on how fast this CPU converts compared with how fast it streams the weights, so the setup
wizard offers it from a measurement here, cached like the prompt-graph advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.cpu import CpuInfo, cpu_info
from engine.kernel_probe import probe_session
from engine.memory import cache_buffer
from engine.probe_cache import OptionAdvice, measured_per_cpu

from ..graph.attention import cached_attention, chunk_shape
from ..graph.builder import FLOAT, FLOAT16, GraphBuilder
from ..graph.ops import matmul_nbits
from ..quantize import BlockWeight
from .kernels import best_seconds, matmul_session
from .prompt_graph import INT4, PROBE_K, PROBE_N

# Qwen3-VL-4B's text decoder, the model the wizard converts.
LAYERS, HEADS, KV_HEADS, HEAD_DIM = 36, 32, 8, 128
HIDDEN, INTERMEDIATE, VOCAB = 2560, 9728, 151936
PROBE_CONTEXT = 4096  # a long conversation: where the cache type shows
DEFAULT_CONTEXT = 8192  # the engine's default cache length (EngineOptions.max_context)
# Extra memory of an fp32 cache: keys and values of every layer, 2 bytes more per number.
EXTRA_BYTES_PER_TOKEN = LAYERS * KV_HEADS * HEAD_DIM * 2 * 2


def _int4_bytes(weights: int, block: int) -> float:
    """MatMulNBits storage as the exporter writes it: a nibble per weight, an fp32 scale and a
    4-bit zero point per block."""
    return weights * (0.5 + 4.5 / block)


# What one decode step reads from memory besides the cache: every layer's int4 weights (q/k/v, o,
# gate/up, down in blocks of 128) and the tied lm_head (blocks of 32), ~2.2 GB as exported.
_LAYER_WEIGHTS = HIDDEN * (HEADS + 2 * KV_HEADS) * HEAD_DIM + HEADS * HEAD_DIM * HIDDEN + 3 * HIDDEN * INTERMEDIATE
DECODE_WEIGHT_BYTES = _int4_bytes(LAYERS * _LAYER_WEIGHTS, INT4.block_size) + _int4_bytes(VOCAB * HIDDEN, 32)
PROBE_WEIGHT_BYTES = _int4_bytes(PROBE_K * PROBE_N, INT4.block_size)

OFFER_AT = 1.15  # long conversations decode at least this much faster: offered
SUGGEST_AT = 1.3  # ... and ticked by default
_CACHE_VERSION = 2  # 2: attention from matmuls over a time-major cache (was GroupQueryAttention)


@dataclass(frozen=True)
class KvCacheAdvice(OptionAdvice):
    offer_at: ClassVar[float] = OFFER_AT
    suggest_at: ClassVar[float] = SUGGEST_AT

    cpu_summary: str
    attention_fp16_ms: float  # one layer's attention for one token after PROBE_CONTEXT cached ones
    attention_fp32_ms: float
    weights_ms: float  # the rest of that decode step: streaming the int4 weights once

    @property
    def decode_speedup(self) -> float:
        """Predicted decode speed-up at PROBE_CONTEXT tokens with an fp32 cache: only attention changes."""
        fp16 = self.weights_ms + LAYERS * self.attention_fp16_ms
        fp32 = self.weights_ms + LAYERS * self.attention_fp32_ms
        return fp16 / fp32 if fp32 > 0 else 0.0

    @property
    def gain(self) -> float:
        return self.decode_speedup

    def hint(self) -> str:
        memory = f"{EXTRA_BYTES_PER_TOKEN * DEFAULT_CONTEXT / 1e9:.1f} GB"
        if self.offered:
            return (
                f"Measured on this computer: answers late in a long conversation come about "
                f"{self.decode_speedup:.1f}x faster; needs up to {memory} more memory while chatting."
            )
        return (
            f"Not offered: measured on this computer ({self.cpu_summary}), answers in long conversations "
            f"would come only {self.decode_speedup:.2f}x faster, not worth up to {memory} more memory."
        )


def attention_graph(kv_type: int) -> tuple[GraphBuilder, str]:
    """One decoder layer's attention as exported (layer 0, the cache in `kv_type`), and its output."""
    g = GraphBuilder("attention_probe")
    qkv = tuple(g.input(x, FLOAT, [1, 1, n * HEAD_DIM]) for x, n in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)))
    for kv in ("key", "value"):
        g.input(f"past_key_values.0.{kv}", kv_type, ["T", KV_HEADS, HEAD_DIM])
    with g.scope("attn_mask"):
        chunk = chunk_shape(g, "past_key_values.0.key", qkv[1], HEADS // KV_HEADS)
    with g.scope("attn"):
        out = cached_attention(g, qkv, 0, (HEADS, KV_HEADS, HEAD_DIM), chunk, kv_type)
    g.output(out, out, FLOAT, [1, 1, HEADS * HEAD_DIM])
    for kv in ("key", "value"):
        name = f"new_key_values.0.{kv}"
        g.output(name, name, kv_type, [1, KV_HEADS, HEAD_DIM])
    return g, out


def _attention_step(kv_type: int, dtype, rng: np.random.Generator):
    """A callable running one decode step's attention over PROBE_CONTEXT cached tokens, the cache
    bound in place (a prefix of a buffer preallocated to the default context, the new row written
    after it) as the engine binds it."""
    g, out = attention_graph(kv_type)
    session = probe_session(g.graph())
    shape = (DEFAULT_CONTEXT, KV_HEADS, HEAD_DIM)
    numbers = rng.standard_normal(shape, dtype=np.float32)
    cache = [cache_buffer(shape, dtype) for _ in ("key", "value")]  # the engine's pages (4 KiB, not huge)
    for buffer in cache:
        buffer[...] = numbers
    io = session.io_binding()
    for name, n in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
        io.bind_cpu_input(name, rng.standard_normal((1, 1, n * HEAD_DIM)).astype(np.float32))
    row_bytes = KV_HEADS * HEAD_DIM * np.dtype(dtype).itemsize
    for kv, buffer in zip(("key", "value"), cache, strict=True):
        start = buffer.ctypes.data
        io.bind_input(f"past_key_values.0.{kv}", "cpu", 0, dtype, [PROBE_CONTEXT, KV_HEADS, HEAD_DIM], start)
        new_row = start + PROBE_CONTEXT * row_bytes
        io.bind_output(f"new_key_values.0.{kv}", "cpu", 0, dtype, [1, KV_HEADS, HEAD_DIM], new_row)
    io.bind_output(out, "cpu")

    def run(_bound=cache) -> None:  # the bound buffers must live as long as the binding
        session.run_with_iobinding(io)

    return run


def _matmul_step(rng: np.random.Generator):
    """A callable running one token through the MLP's up projection in int4 (M=1). The kernel's
    speed does not depend on the weights' values, so random nibbles in the exporter's layout stand
    in for quantized ones (quantizing 25M weights would take longer than the measurement)."""
    blocks = PROBE_K // INT4.block_size
    weight = BlockWeight(
        rng.integers(0, 256, (PROBE_N, blocks, INT4.block_size // 2), np.uint8),
        rng.uniform(1e-3, 1e-2, (PROBE_N, blocks)).astype(np.float32),
        rng.integers(0, 256, (PROBE_N, (blocks + 1) // 2), np.uint8),
        PROBE_N,
        PROBE_K,
        INT4.block_size,
        bits=4,
    )
    session = matmul_session(
        PROBE_K, PROBE_N, lambda g, x: matmul_nbits(g, x, "up_proj", weight, None, INT4.accuracy_level)
    )
    x = rng.standard_normal((1, PROBE_K), dtype=np.float32)
    return lambda: session.run(None, {"x": x})


def measure_kv_cache_kernels(seconds: float = 1.0, cpu: CpuInfo | None = None) -> KvCacheAdvice:
    """Time attention with both cache types and the int4 matmul for about `seconds` in all."""
    rng = np.random.default_rng(0)
    steps = [
        _attention_step(FLOAT16, np.float16, rng),
        _attention_step(FLOAT, np.float32, rng),
        _matmul_step(rng),
    ]
    fp16, fp32, matmul = best_seconds(steps, seconds)
    weights = matmul * DECODE_WEIGHT_BYTES / PROBE_WEIGHT_BYTES
    return KvCacheAdvice((cpu or cpu_info()).summary(), *(round(t * 1e3, 3) for t in (fp16, fp32, weights)))


def kv_cache_advice(cache_file: Path | None = None, seconds: float = 0.6) -> KvCacheAdvice:
    """The measured advice, from `cache_file` when it was measured on this CPU and onnxruntime."""
    return measured_per_cpu(
        cache_file, _CACHE_VERSION, KvCacheAdvice, lambda cpu: measure_kv_cache_kernels(seconds, cpu)
    )
