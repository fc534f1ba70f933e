"""Keeping the engine's resident memory close to what it actually uses.

Two onnxruntime-adjacent habits would otherwise cost gigabytes: huge pages on the KV cache, and
an arena that keeps the high-water mark of every image encode for the life of the session.
"""

from __future__ import annotations

import mmap

import numpy as np
import onnxruntime as ort


def cache_buffer(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zeroed buffer whose memory is committed only where it is written.

    With transparent huge pages (numpy asks for them on large arrays), the first token written
    into each of the 72 layer buffers makes 2 MiB of it resident; with the cache laid out
    [1, kv_heads, max_len, head_dim] as it once was, every head's slab did, about 1 GB of RSS for
    a one-line chat. A private anonymous mapping on 4 KiB pages keeps the resident cache
    proportional to the tokens in it (measured: README.md, Speed)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not hasattr(mmap, "MAP_PRIVATE") or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype)  # not Linux: no transparent huge pages to opt out of
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # zero-filled on first touch
    try:
        region.madvise(mmap.MADV_NOHUGEPAGE)
    except OSError:
        pass  # a kernel without transparent huge pages refuses the advice; nothing to opt out of
    return np.frombuffer(region, dtype).reshape(shape)


def releasing_run_options() -> ort.RunOptions:
    """Run options that hand the run's freed scratch back to the OS when the run ends.

    onnxruntime's arena otherwise keeps its high-water mark for the life of the session: an
    896x896 image leaves ~300 MB of attention scratch resident. Used for runs that need large,
    short-lived buffers (images, prompt chunks), not for decode steps."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options
