"""The KV cache commits memory only for the tokens written into it (no huge-page blow-up)."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from engine.memory import cache_buffer

SHAPE = (1, 8, 8192, 128)  # a full-size layer's cache: 8 kv heads x 8192 slots x 128, 32 MiB in float32


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def huge_page_buffer(shape) -> np.ndarray:
    """The control: the same buffer, asking for transparent huge pages (what numpy does for
    large arrays, and what THP=always does to every large mapping)."""
    region = mmap.mmap(-1, int(np.prod(shape)) * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(region, np.float32).reshape(shape)


def grown_mib(make) -> float:
    """Resident growth after writing a 4-token prompt into every head of 8 such buffers."""
    before = rss_kib()
    buffers = [make(SHAPE) for _ in range(8)]  # 256 MiB of address space
    for b in buffers:
        b[:, :, :4] = 1.0
    grown = (rss_kib() - before) / 1024
    assert all(np.count_nonzero(b) == 8 * 4 * 128 for b in buffers)
    return grown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_writing_one_token_per_head_commits_pages_not_whole_slabs():
    control = grown_mib(huge_page_buffer)
    if control < 32:
        pytest.skip(
            f"this kernel gives no transparent huge pages here (control grew {control:.0f} MiB), "
            "so the blow-up cannot be shown"
        )
    # With huge pages, one token makes the first 2 MiB of all 8 head slabs resident: 128 MiB here.
    grown = grown_mib(cache_buffer)
    assert grown < 8, f"{grown:.0f} MiB resident for 8 x 8 x 4 tokens (huge pages would give {control:.0f})"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_measure_sees_a_filled_cache():
    before = rss_kib()
    buffer = cache_buffer(SHAPE)
    buffer[:] = 2.0
    assert (rss_kib() - before) / 1024 > 30
