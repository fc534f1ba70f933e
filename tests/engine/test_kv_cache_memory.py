"""The KV cache commits memory only for the tokens written into it (no huge-page blow-up)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.memory import cache_buffer


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_writing_one_token_per_head_commits_pages_not_whole_slabs():
    # A full-size layer's cache: [1, 8 kv heads, 8192 slots, 128] float32 is 32 MiB per buffer.
    # With transparent huge pages, one token makes the first 2 MiB of all 8 head slabs resident.
    shape = (1, 8, 8192, 128)
    before = rss_kib()
    buffers = [cache_buffer(shape) for _ in range(8)]  # 256 MiB of address space
    for b in buffers:
        b[:, :, :4] = 1.0  # a 4-token prompt in every head
    grown_mib = (rss_kib() - before) / 1024
    assert all(b.shape == shape and b.dtype == np.float32 for b in buffers)
    assert all(np.count_nonzero(b) == 8 * 4 * 128 for b in buffers)  # zero elsewhere
    assert grown_mib < 8, f"{grown_mib:.0f} MiB resident for 8 x 8 x 4 tokens"
    # and the measure sees the cache at all: filling one buffer makes its 32 MiB resident
    buffers[0][:] = 2.0
    assert (rss_kib() - before) / 1024 > 32
