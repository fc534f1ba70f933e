"""onnxruntime sessions for the two graphs, with a preallocated KV cache updated in place.

Each layer's cache is one time-major buffer [max_len, kv_heads, head_dim]. A run reads the tokens
cached so far as a bound prefix of it and writes the chunk's keys and values straight onto the
rows after them, so nothing is copied per token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .cpu import cpu_info
from .errors import ArtifactError
from .manifest import DecoderSection
from .memory import cache_buffer, releasing_run_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRead:
    """One prompt chunk read into the cache: by which graph, how many tokens after how many, in
    how long, and how far the whole prompt is."""

    graph: str
    tokens: int
    context: int
    seconds: float
    done: int
    total: int


def session_options(threads: int | None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """profile_prefix: write an onnxruntime trace (per-node times) there, for bench.profile."""
    so = ort.SessionOptions()
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.intra_op_num_threads = threads or cpu_info().physical_cores  # hyper-threads do not help
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


_CACHE_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


def cache_type(session: ort.InferenceSession) -> np.dtype:
    """The KV cache element type a decoder graph declares (the graph, not the manifest, decides)."""
    declared = {i.name: i.type for i in session.get_inputs()}.get("past_key_values.0.key")
    if declared not in _CACHE_TYPES:
        raise ArtifactError(f"The decoder's KV cache type {declared} is not supported. Convert the model again.")
    return _CACHE_TYPES[declared]


class VisionRunner:
    def __init__(self, path: Path, threads: int | None = None, channels: int = 3, profile_prefix: str | None = None):
        options = session_options(threads, profile_prefix + "vision" if profile_prefix else None)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.channels = channels
        self.input_width = self.session.get_inputs()[0].shape[1]

    def encode(self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Image embeddings [N/4, H] and DeepStack features [levels, N/4, H] for one image.

        pixel_values are the processor's rows [N, C*T*P*P]. A graph with folded patch weights
        takes one frame per patch [N, C*P*P]; a still's frames are identical, so frame 0 is it."""
        pixels = np.asarray(pixel_values, dtype=np.float32)
        width = pixels.shape[1]
        if isinstance(self.input_width, int) and width != self.input_width:
            frames, rest = divmod(width, self.input_width)
            if rest or frames < 2:
                raise ArtifactError(
                    f"The vision graph takes {self.input_width} values per patch but the "
                    f"image processor made {width}: the model folder is inconsistent. "
                    "Convert the model again."
                )
            pixels = pixels.reshape(len(pixels), self.channels, frames, -1)[:, :, 0]
        embeds, deepstack = self.session.run(
            None,
            {
                "pixel_values": np.ascontiguousarray(pixels.reshape(len(pixels), -1)),
                "grid_thw": np.asarray([grid_thw], dtype=np.int64),
            },
            releasing_run_options(),
        )
        return embeds, deepstack


class KVCache:
    """Keys and values of every layer for one token sequence, and how many tokens it holds.

    A conversation (or a server slot) owns one, so several can keep their history side by side;
    the runner appends to whichever is bound. Slots after `length` are stale and simply
    overwritten later."""

    def __init__(self, shape: DecoderSection, max_len: int, dtype: np.dtype):
        dims = (max_len, shape.kv_heads, shape.head_dim)
        self.buffers = [cache_buffer(dims, dtype) for _ in range(2 * shape.num_layers)]  # key, value per layer
        self.dtype = np.dtype(dtype)
        self.row_bytes = shape.kv_heads * shape.head_dim * self.dtype.itemsize
        self.max_len = max_len
        self.length = 0

    def reset(self, length: int = 0) -> None:
        """Forget everything after `length` tokens."""
        if not 0 <= length <= self.length:
            raise ValueError("cannot extend the cache by truncating it")
        self.length = length


class DecoderRunner:
    """Runs chunks of tokens through the decoder, appending to the bound KV cache of `max_len` slots."""

    PREFILL_MIN_TOKENS = 32  # below this a chunk is decode-like: the int4 graph reads fewer bytes

    def __init__(
        self,
        path: Path,
        shape: DecoderSection,
        max_len: int,
        threads: int | None = None,
        prefill_path: Path | None = None,
        profile_prefix: str | None = None,
    ):
        self.shape = shape
        self.max_len = max_len
        self._profile_prefix = profile_prefix
        self.session = ort.InferenceSession(
            str(path), session_options(threads, self._profiled("decoder")), providers=["CPUExecutionProvider"]
        )
        # Optional graph for prompt chunks (other weights, same inputs and outputs); both graphs
        # write into the same cache buffers, so they can take turns freely. It loads in the
        # background (prepacking its int8 weights takes several seconds); until it is ready,
        # prompts go through the main graph. Not a daemon: the interpreter waits for it at exit.
        # A daemon thread still inside onnxruntime's session set-up when Python finalizes is
        # ended by CPython as it takes the GIL back, and that forced unwind through onnxruntime's
        # C++ frames aborts the process (SIGABRT) instead of exiting.
        self.prefill_session = None
        self._prefill_loader = None
        if prefill_path is not None:
            self._prefill_loader = threading.Thread(
                target=self._load_prefill, args=(prefill_path, threads), name="iris-prefill-graph-loader", daemon=False
            )
            self._prefill_loader.start()
        self.kv_type = cache_type(self.session)
        self.default_cache = self.new_cache()
        self.cache = self.default_cache  # the cache forward() appends to; see bind()

    def _load_prefill(self, path: Path, threads: int | None) -> None:
        try:
            options = session_options(threads, self._profiled("prompt"))
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            if cache_type(session) != self.kv_type:
                raise ArtifactError(
                    f"{path.name} keeps its cache as {cache_type(session)}, the decoder as "
                    f"{self.kv_type}; they cannot share it"
                )
            self.prefill_session = session
        except Exception as exc:  # a damaged optional graph must not take the engine down, nor go unseen
            log.warning("The prompt graph %s cannot be used, so prompts are read with the decoder: %s", path.name, exc)

    def _profiled(self, name: str) -> str | None:
        return self._profile_prefix + name if self._profile_prefix else None

    @property
    def prefill_loading(self) -> bool:
        """The prompt graph is still being loaded in the background."""
        return self._prefill_loader is not None and self._prefill_loader.is_alive()

    def wait_for_prefill_graph(self, timeout: float | None = None) -> bool:
        """Block until the prompt graph is loaded (for benchmarks and tests); True if it is."""
        if self._prefill_loader is not None:
            self._prefill_loader.join(timeout)
        return self.prefill_session is not None

    def new_cache(self) -> KVCache:
        """Another independent cache of `max_len` slots (its memory is committed only as it fills)."""
        return KVCache(self.shape, self.max_len, self.kv_type)

    def bind(self, cache: KVCache) -> None:
        """Make `cache` the one prefill()/forward()/reset() work on (the caller holds the engine)."""
        self.cache = cache

    @property
    def length(self) -> int:
        """Tokens in the bound cache."""
        return self.cache.length

    @length.setter
    def length(self, value: int) -> None:
        self.cache.length = value

    def reset(self, length: int = 0) -> None:
        """Forget everything after `length` tokens of the bound cache."""
        self.cache.reset(length)

    def graph_for(self, tokens: int) -> str:
        """Which session reads a chunk of `tokens`: "prompt" (the prompt graph) or "decoder"."""
        return "prompt" if self.prefill_session is not None and tokens >= self.PREFILL_MIN_TOKENS else "decoder"

    def prefill(self, *args, **kwargs) -> np.ndarray | None:
        """prefill_steps() run to the end: the last row's logits, or None if stopped."""
        steps = self.prefill_steps(*args, **kwargs)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def prefill_steps(
        self,
        input_ids: np.ndarray,
        position_ids: np.ndarray,
        visual_embeds: np.ndarray | None = None,
        visual_pos: np.ndarray | None = None,
        deepstack: np.ndarray | None = None,
        chunk: int = 256,
        should_stop=lambda: False,
    ) -> Generator[ChunkRead, None, np.ndarray | None]:
        """forward() in chunks of at most `chunk` tokens, yielding a ChunkRead after each: bounds
        the attention scratch memory (scores are chunk x context per head) on long prompts, lets
        a cancel land between chunks, and tells the caller how far it is and how fast this machine
        reads. Returns the last row's logits, or None (cache rewound) if `should_stop()` said so.
        A failed or abandoned read leaves none of the prompt in the cache."""
        ids = np.asarray(input_ids).reshape(-1)
        logits = None
        before = self.length
        try:
            for start in range(0, len(ids), chunk):
                if should_stop():
                    self.reset(before)
                    return None
                stop = min(start + chunk, len(ids))
                vis = {}
                if visual_embeds is not None and len(visual_pos):
                    rows = np.flatnonzero((visual_pos >= start) & (visual_pos < stop))
                    vis = dict(
                        visual_embeds=visual_embeds[rows],
                        visual_pos=visual_pos[rows] - start,
                        deepstack=deepstack[:, rows],
                    )
                context, graph, t0 = self.length, self.graph_for(stop - start), time.perf_counter()
                logits = self.forward(ids[start:stop], position_ids[:, start:stop], **vis)
                yield ChunkRead(graph, stop - start, context, time.perf_counter() - t0, stop, len(ids))
        except BaseException:  # a failed chunk (out of memory, ...): the cache holds none of the prompt
            self.reset(before)
            raise
        return logits

    def forward(
        self,
        input_ids: np.ndarray,
        position_ids: np.ndarray,
        visual_embeds: np.ndarray | None = None,
        visual_pos: np.ndarray | None = None,
        deepstack: np.ndarray | None = None,
        logits_pos: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append `input_ids` [S] at positions [3, S]; returns logits [P, vocab] (P=1: last row)."""
        s = int(input_ids.shape[-1])
        if self.length + s > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {s} > {self.max_len}")
        sh = self.shape
        if visual_embeds is None:
            visual_embeds = np.zeros((0, sh.hidden_size), np.float32)
            visual_pos = np.zeros((0,), np.int64)
            deepstack = np.zeros((sh.deepstack_levels, 0, sh.hidden_size), np.float32)
        total = self.length + s
        session = self.session
        if self.prefill_session is not None and s >= self.PREFILL_MIN_TOKENS:
            session = self.prefill_session
        io = session.io_binding()
        feeds = {
            "input_ids": np.asarray(input_ids, np.int64).reshape(1, s),
            "position_ids": np.asarray(position_ids, np.int64).reshape(3, 1, s),
            "visual_embeds": np.ascontiguousarray(visual_embeds, np.float32),
            "visual_pos": np.asarray(visual_pos, np.int64),
            "deepstack_embeds": np.ascontiguousarray(deepstack, np.float32),
        }
        feeds["logits_pos"] = np.asarray([-1] if logits_pos is None else logits_pos, np.int64)
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        io.bind_output("logits", "cpu")  # first, so it is output 0 below
        cache, past, rows = self.cache, self.length, [sh.kv_heads, sh.head_dim]
        for i in range(sh.num_layers):
            for j, kv in enumerate(("key", "value")):
                start = cache.buffers[2 * i + j].ctypes.data
                io.bind_input(f"past_key_values.{i}.{kv}", "cpu", 0, cache.dtype, [past, *rows], start)
                new_rows = start + past * cache.row_bytes
                io.bind_output(f"new_key_values.{i}.{kv}", "cpu", 0, cache.dtype, [s, *rows], new_rows)
        session.run_with_iobinding(io, releasing_run_options() if s >= self.PREFILL_MIN_TOKENS else None)
        self.length = total
        # Only the logits are copied out: the cache rows are already in place.
        return io.get_outputs()[0].numpy()[0]
